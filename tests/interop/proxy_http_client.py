"""The official MCP Python SDK client through mcp-oauth-proxy in front of an HTTP MCP server
that knows nothing of OAuth (tests/interop/proxy_fixture_server.py in `http` mode;
proxy/tests/http_sdk_clients.rs runs it).

    python proxy_http_client.py <proxy-mcp-url> <redirect-uri>

The SDK's `OAuthClientProvider` handles the proxy's 401 on `initialize` inline: metadata
discovery, registration, the authorization URL ({"event":"authorize","url":...} on stdout;
the test's scripted browser signs in, consents and writes the callback URL back on stdin),
the code exchange. Then the script lists the tools, calls `echo`, and calls `slow`,
recording when each progress notification and the result arrived (milliseconds since the
call), so the test can check that progress was streamed through the proxy before the result.

The last stdout line is {"event":"report",...}.
"""

import asyncio
import json
import sys
import time
from urllib.parse import parse_qs, urlparse

import httpx2
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

SERVER_URL, REDIRECT_URI = sys.argv[1], sys.argv[2]

requests_log: list[dict] = []
authorization_urls: list[str] = []


class MemoryStorage(TokenStorage):
    """In-memory token and client storage."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


async def redirect_handler(url: str) -> None:
    authorization_urls.append(url)
    print(json.dumps({"event": "authorize", "url": url}), flush=True)


async def callback_handler() -> AuthorizationCodeResult:
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        raise RuntimeError("stdin closed before the callback URL arrived")
    q = parse_qs(urlparse(line.strip()).query)
    first = lambda k: q.get(k, [None])[0]  # noqa: E731
    if first("error"):
        raise RuntimeError(f"authorization failed: {first('error')}")
    return AuthorizationCodeResult(code=first("code"), state=first("state"), iss=first("iss"))


async def on_request(request: httpx2.Request) -> None:
    entry = {
        "method": request.method,
        "url": str(request.url),
        "authorization": "Bearer" if "authorization" in request.headers else None,
    }
    request.extensions["log_entry"] = entry
    requests_log.append(entry)


async def on_response(response: httpx2.Response) -> None:
    entry = response.request.extensions.get("log_entry")
    if entry is not None:
        entry["status"] = response.status_code


def text_of(result) -> dict:
    return {
        "text": "".join(c.text for c in result.content if getattr(c, "type", None) == "text"),
        "is_error": bool(result.is_error),
    }


async def main() -> dict:
    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=SERVER_URL,
        client_metadata=OAuthClientMetadata(
            client_name="mcp-oauth-proxy interop (Python SDK)",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    out: dict = {"event": "report", "steps": {}}
    http = httpx2.AsyncClient(
        auth=provider,
        timeout=httpx2.Timeout(30.0, read=60.0),
        event_hooks={"request": [on_request], "response": [on_response]},
    )
    async with http, streamable_http_client(SERVER_URL, http_client=http) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            out["steps"]["connect"] = {
                "unauthorized_first": any(r.get("status") == 401 for r in requests_log),
                "has_token": bool(storage.tokens and storage.tokens.access_token),
            }
            tools = await session.list_tools()
            out["steps"]["tools"] = sorted(t.name for t in tools.tools)
            out["steps"]["echo"] = text_of(await session.call_tool("echo", {"text": "hello through the proxy"}))

            progress: list[dict] = []
            start = time.monotonic()

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append(
                    {
                        "progress": value,
                        "total": total,
                        "message": message,
                        "at_ms": (time.monotonic() - start) * 1000,
                    }
                )

            result = await session.call_tool("slow", {"steps": 3, "delay": 0.5}, progress_callback=on_progress)
            out["steps"]["slow"] = {
                **text_of(result),
                "result_at_ms": (time.monotonic() - start) * 1000,
                "progress": progress,
            }
    return out


if __name__ == "__main__":
    try:
        report = asyncio.run(main())
        status = 0
    except Exception as e:  # noqa: BLE001
        import traceback

        report = {
            "event": "report",
            "fatal": {"name": type(e).__name__, "message": str(e)},
            "stack": traceback.format_exc(),
        }
        status = 1
    report["authorization_urls"] = authorization_urls
    report["requests"] = requests_log
    print(json.dumps(report), flush=True)
    sys.exit(status)

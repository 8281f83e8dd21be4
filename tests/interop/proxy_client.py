"""The official MCP Python SDK client against mcp-oauth-proxy (whatever is behind it: a stdio
child or an HTTP upstream serving tests/interop/proxy_fixture_server.py's tools).

    python proxy_client.py <mcp-url> <redirect-uri> [<steps> <delay>]

The SDK's `OAuthClientProvider` runs the whole OAuth flow inline (401 → protected-resource
metadata → authorization-server metadata → registration → authorization URL → callback →
code exchange). The browser is the test's: `redirect_handler` (sdk_client.py) prints
{"event":"authorize","url":"..."} and `callback_handler` reads the callback URL (one line) the
test's scripted browser writes back on stdin.

Then: list tools, call `whoami`, `echo`, and `slow` (`steps` progress notifications, `delay`
seconds apart; default 3 and 0.4) with a progress callback. Each step prints a JSON line
{"event":"step","name":...}; the last line is {"event":"report",...} with every step's result,
the progress notifications (each with `at`, seconds since the call; their count, and how long
before the result the first one arrived) and every HTTP request's method, URL and status (no
tokens). proxy/tests/{stdio,http}_sdk_clients.rs run it.
"""

import asyncio
import json
import sys
import time

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from sdk_client import MemoryStorage, oauth_provider, text_of

SERVER_URL, REDIRECT_URI = sys.argv[1], sys.argv[2]
STEPS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
DELAY = float(sys.argv[4]) if len(sys.argv) > 4 else 0.4

requests_log: list[dict] = []


async def on_request(request: httpx2.Request) -> None:
    entry = {"method": request.method, "url": str(request.url)}
    if request.method == "POST" and str(request.url) == SERVER_URL:
        try:
            msg = json.loads(request.content)
            method = msg.get("method")
            entry["rpc"] = f"tools/call {msg['params']['name']}" if method == "tools/call" else method
        except Exception:  # noqa: BLE001
            pass
    entry["authorization"] = "Bearer" if "authorization" in request.headers else None
    request.extensions["log_entry"] = entry
    requests_log.append(entry)


async def on_response(response: httpx2.Response) -> None:
    entry = response.request.extensions.get("log_entry")
    if entry is not None:
        entry["status"] = response.status_code
        entry["content_type"] = response.headers.get("content-type")
        entry["session"] = "mcp-session-id" in response.headers


def step(name: str, **fields) -> dict:
    line = {"event": "step", "name": name, **fields}
    print(json.dumps(line), flush=True)
    return line


async def main() -> dict:
    storage = MemoryStorage()
    provider = oauth_provider(SERVER_URL, REDIRECT_URI, "mcp-oauth-proxy interop (Python SDK)", storage)
    out: dict = {"event": "report", "client": "python", "steps": {}}
    http = httpx2.AsyncClient(
        auth=provider,
        timeout=httpx2.Timeout(30.0, read=60.0),
        event_hooks={"request": [on_request], "response": [on_response]},
    )
    async with http, streamable_http_client(SERVER_URL, http_client=http) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            out["steps"]["initialize"] = step(
                "initialize",
                protocol_version=str(init.protocol_version),
                server=init.server_info.name,
                authorized=storage.tokens is not None,
            )
            tools = await session.list_tools()
            out["steps"]["tools"] = step("tools", names=sorted(t.name for t in tools.tools))
            who = text_of(await session.call_tool("whoami", {}))
            out["steps"]["whoami"] = step("whoami", **who)
            out["steps"]["echo"] = step("echo", **text_of(await session.call_tool("echo", {"text": "hello through the proxy"})))

            progress: list[dict] = []
            started = time.monotonic()

            async def on_progress(p: float, total: float | None, message: str | None) -> None:
                progress.append({"progress": p, "total": total, "message": message, "at": time.monotonic() - started})

            result = await session.call_tool(
                "slow", {"steps": STEPS, "delay": DELAY}, progress_callback=on_progress
            )
            done_at = time.monotonic() - started
            out["steps"]["slow"] = step(
                "slow",
                **text_of(result),
                progress_count=len(progress),
                progress=progress,
                result_at=done_at,
                first_progress_at=progress[0]["at"] if progress else None,
                first_progress_before_result=(done_at - progress[0]["at"]) if progress else None,
            )
    return out


if __name__ == "__main__":
    try:
        report = asyncio.run(main())
        status = 0
    except BaseException as e:  # noqa: BLE001
        import traceback

        report = {
            "event": "report",
            "client": "python",
            "fatal": {"name": type(e).__name__, "message": str(e)},
            "stack": traceback.format_exc(),
        }
        status = 1
    report["requests"] = requests_log
    print(json.dumps(report), flush=True)
    sys.exit(status)

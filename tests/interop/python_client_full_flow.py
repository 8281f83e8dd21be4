"""The official MCP Python SDK client (PyPI `mcp`, pinned in tests/interop/requirements.txt and
installed into .interop/venv by scripts/interop-setup.sh) through the whole OAuth flow against
mcp-oauth's embedded authorization server (tests/interop_as_python.rs runs it against the
quickstart app).

    python python_client_full_flow.py <mcp-url> <redirect-uri> [<tool>]

With <tool> (tests/interop_upstream_sdks.rs, against examples/upstream_oidc.rs) the script
only connects, lists the tools, calls <tool> (no arguments) through the authorization and
reports.

The SDK's `OAuthClientProvider` (an httpx2 auth flow) does everything itself: 401 →
protected-resource metadata → authorization-server metadata → dynamic client registration →
authorization URL (PKCE S256, state, resource) → callback checks (state, RFC 9207 `iss`) →
code exchange → refresh → step-up on 403 insufficient_scope. It delegates only the browser:
`redirect_handler` (sdk_client.py) prints {"event":"authorize","url":"..."} and `callback_handler` reads the
callback URL the test's headless browser writes back on stdin (one line).

Steps:
  1. connect without a token (lazy authentication), list tools, call public_search;
  2. call files_read → 401 → authorization inline → the same call succeeds;
  3. mark the access token expired (as time would): the provider refreshes before the next call;
  4. files_write → 403 insufficient_scope → the provider re-authorizes with the union of scopes.

The last stdout line is {"event":"report",...} with every HTTP request the SDK made.
"""

import asyncio
import base64
import json
import sys
import time
from urllib.parse import parse_qs

import httpx2
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from sdk_client import MemoryStorage, authorization_urls, callbacks, oauth_provider, text_of

SERVER_URL, REDIRECT_URI = sys.argv[1], sys.argv[2]
ONLY_TOOL = sys.argv[3] if len(sys.argv) > 3 else None

requests_log: list[dict] = []


def form_of(request: httpx2.Request) -> dict | None:
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        for k in ("code", "refresh_token"):
            if k in form:
                form[k] = "<redacted>"
        if "code_verifier" in form:
            form["code_verifier"] = f"<{len(form['code_verifier'])} chars>"
        return form
    return None


async def on_request(request: httpx2.Request) -> None:
    entry = {"method": request.method, "url": str(request.url)}
    form = form_of(request)
    if form is not None:
        entry["form"] = form
    elif request.method == "POST" and str(request.url).endswith("/register"):
        entry["json"] = json.loads(request.content)
    elif request.method == "POST":
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
        entry["www_authenticate"] = response.headers.get("www-authenticate")


def claims_of(jwt: str | None) -> dict | None:
    if not jwt:
        return None
    try:
        payload = jwt.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except Exception:  # noqa: BLE001
        return None


async def main() -> dict:
    storage = MemoryStorage()
    provider = oauth_provider(SERVER_URL, REDIRECT_URI, "mcp-oauth interop (Python SDK)", storage)
    out: dict = {"event": "report", "steps": {}}
    http = httpx2.AsyncClient(
        auth=provider,
        timeout=httpx2.Timeout(30.0, read=60.0),
        event_hooks={"request": [on_request], "response": [on_response]},
    )
    async with http, streamable_http_client(SERVER_URL, http_client=http) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            tools = await session.list_tools()
            if ONLY_TOOL:
                out["steps"]["anonymous"] = {"tools": sorted(t.name for t in tools.tools)}
                result = text_of(await session.call_tool(ONLY_TOOL, {}))
                tokens = storage.tokens
                out["steps"]["authorize"] = {
                    ONLY_TOOL: result,
                    "callback": callbacks[-1] if callbacks else None,
                    "claims": claims_of(tokens.access_token if tokens else None),
                }
                return out
            out["steps"]["anonymous"] = {
                "tools": sorted(t.name for t in tools.tools),
                "public_search": text_of(await session.call_tool("public_search", {"query": "txt"})),
                "had_token": storage.tokens is not None,
            }

            # 401 → discovery, registration, authorization and exchange, inline.
            read_result = text_of(await session.call_tool("files_read", {"path": "welcome.txt"}))
            first = storage.tokens
            out["steps"]["authorize"] = {
                "files_read": read_result,
                "callback": callbacks[-1] if callbacks else None,
                "client_id": storage.client_info.client_id if storage.client_info else None,
                "token_type": first.token_type if first else None,
                "scope": first.scope if first else None,
                "has_refresh_token": bool(first and first.refresh_token),
                "claims": claims_of(first.access_token if first else None),
                "metadata_issuer": str(provider.context.oauth_metadata.issuer)
                if provider.context.oauth_metadata
                else None,
            }

            # Refresh: the token expires (as time would make it); the provider refreshes before
            # sending the next request.
            provider.context.token_expiry_time = time.time() - 1
            refreshed = text_of(await session.call_tool("files_read", {"path": "welcome.txt"}))
            after = storage.tokens
            out["steps"]["refresh"] = {
                "files_read": refreshed,
                "access_token_changed": after.access_token != first.access_token,
                "refresh_token_rotated": bool(after.refresh_token) and after.refresh_token != first.refresh_token,
                "claims": claims_of(after.access_token),
                "authorizations_so_far": len(authorization_urls),
            }

            # Step-up: 403 insufficient_scope → re-authorization with the union of scopes.
            write_result = text_of(
                await session.call_tool(
                    "files_write", {"path": "notes/from-python.txt", "content": "hello from the Python SDK"}
                )
            )
            last = storage.tokens
            out["steps"]["step_up"] = {
                "files_write": write_result,
                "callback": callbacks[-1] if callbacks else None,
                "scope": last.scope if last else None,
                "claims": claims_of(last.access_token if last else None),
                "files_read": text_of(await session.call_tool("files_read", {"path": "notes/from-python.txt"})),
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

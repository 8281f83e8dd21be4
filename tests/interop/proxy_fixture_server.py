"""An MCP server that knows nothing of OAuth, written with the official Python SDK
(`mcp.server.mcpserver.MCPServer`, FastMCP in mcp 1.x), for the mcp-oauth-proxy tests:

    python proxy_fixture_server.py stdio          # MCP over stdin/stdout (the proxy's child)
    python proxy_fixture_server.py http PORT      # streamable HTTP at http://127.0.0.1:PORT/mcp
    python proxy_fixture_server.py http-stateless PORT
        # the same, stateless and answering in JSON: every request stands alone, so
        # `tools/list` needs no session (the proxy's benchmark, proxy/benches/proxy.rs)

Tools:
  whoami()            -> {"pid": ..., "calls": n}   (the process, and calls it has served)
  remember(value)     -> stores value in this process; recall() returns it
  slow(steps, delay)  -> reports progress `steps` times, `delay` seconds apart, then "done"
  echo(text)          -> text
  crash()             -> writes "fixture: crashing on purpose" to stderr and exits with status 3
"""

import asyncio
import os
import sys

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("proxy-fixture")
state = {"calls": 0, "value": None}


@server.tool()
def whoami() -> dict:
    """This process's id and how many calls it has served."""
    state["calls"] += 1
    return {"pid": os.getpid(), "calls": state["calls"]}


@server.tool()
def remember(value: str) -> str:
    """Keeps `value` in this process."""
    state["value"] = value
    return "ok"


@server.tool()
def recall() -> str:
    """What `remember` kept in this process (empty when nothing)."""
    return state["value"] or ""


@server.tool()
def echo(text: str) -> str:
    """Returns `text`."""
    return text


@server.tool()
async def slow(ctx: Context, steps: int = 3, delay: float = 0.2) -> str:
    """Reports progress `steps` times, `delay` seconds apart."""
    for i in range(steps):
        await ctx.report_progress(i + 1, steps, f"step {i + 1} of {steps}")
        await asyncio.sleep(delay)
    return "done"


@server.tool()
def crash() -> str:
    """Exits the process mid-call, as a crashing server would."""
    sys.stderr.write("fixture: crashing on purpose\n")
    sys.stderr.flush()
    os._exit(3)


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if mode == "stdio":
        server.run("stdio")
    elif mode == "http":
        port = int(sys.argv[2])
        server.run("streamable-http", host="127.0.0.1", port=port, streamable_http_path="/mcp")
    elif mode == "http-stateless":
        port = int(sys.argv[2])
        # No access log line per request: under load it would cost more than the request.
        server.settings.log_level = "WARNING"
        server.run(
            "streamable-http",
            host="127.0.0.1",
            port=port,
            streamable_http_path="/mcp",
            stateless_http=True,
            json_response=True,
        )
    else:
        sys.exit(f"unknown mode {mode!r}: stdio, http PORT or http-stateless PORT")

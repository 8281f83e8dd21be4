"""What the Python SDK client scripts share (python_client_full_flow.py, proxy_client.py): the
SDK's `OAuthClientProvider` for a public client, its in-memory token storage and its two
browser hooks.

`redirect_handler` prints {"event":"authorize","url":"..."} where a real client opens the
browser; `callback_handler` reads the callback URL (one line) the test's scripted browser
writes back on stdin, records what a careful client checks of it and hands the SDK the code,
state and RFC 9207 `iss`.
"""

import asyncio
import json
import sys
from urllib.parse import parse_qs, urlparse

from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider, TokenStorage
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

# Every authorization URL handed to the browser, and what each callback carried.
authorization_urls: list[str] = []
callbacks: list[dict] = []


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
    # Where a real client opens the browser.
    authorization_urls.append(url)
    print(json.dumps({"event": "authorize", "url": url}), flush=True)


async def callback_handler() -> AuthorizationCodeResult:
    line = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        raise RuntimeError("stdin closed before the callback URL arrived")
    url = urlparse(line.strip())
    q = parse_qs(url.query)
    first = lambda k: q.get(k, [None])[0]  # noqa: E731
    callbacks.append(
        {
            "origin_path": f"{url.scheme}://{url.netloc}{url.path}",
            "iss": first("iss"),
            "error": first("error"),
            "code_present": bool(first("code")),
            "state_present": bool(first("state")),
        }
    )
    if first("error"):
        raise RuntimeError(f"authorization failed: {first('error')} {first('error_description')}")
    return AuthorizationCodeResult(code=first("code"), state=first("state"), iss=first("iss"))


def oauth_provider(server_url: str, redirect_uri: str, client_name: str, storage: MemoryStorage) -> OAuthClientProvider:
    """The SDK's provider for a public client (no secret) that registers itself."""
    return OAuthClientProvider(
        server_url=server_url,
        client_metadata=OAuthClientMetadata(
            client_name=client_name,
            redirect_uris=[redirect_uri],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )


def text_of(result) -> dict:
    """A tool result's text content joined, and whether it is an error."""
    return {
        "text": "".join(c.text for c in result.content if getattr(c, "type", None) == "text"),
        "is_error": bool(result.is_error),
    }

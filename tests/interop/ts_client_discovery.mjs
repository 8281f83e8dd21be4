// Drives the official MCP TypeScript SDK client (@modelcontextprotocol/sdk, installed into
// .interop/ by scripts/interop-setup.sh) against an mcp-oauth protected server and prints one
// JSON line on stdout describing what the SDK did; tests/interop_ts_sdk.rs asserts on it.
//
//   node ts_client_discovery.mjs discovery <mcp-url> <client-id> <issuer>
//     Connects with an OAuthClientProvider that holds no token. The server answers 401; the
//     SDK must find the protected-resource metadata from the WWW-Authenticate header, then
//     the authorization server, and build an authorization URL. The provider records that
//     URL instead of opening a browser, so connect() fails with UnauthorizedError.
//     The client is pre-registered (<client-id>, at <issuer>): the test provider offers no
//     dynamic registration, and the SDK needs a client id only to build the URL.
//
//   node ts_client_discovery.mjs lazy <mcp-url>
//     Connects without any auth provider (the server runs lazy authentication), lists the
//     tools, calls `public_echo`, then tries `whoami`, which needs a token.
//
//   node ts_client_discovery.mjs token <mcp-url> <access-token>
//     Connects with a provider that already holds <access-token> and calls `whoami` and
//     `secret_read`.
//
// Every HTTP request the SDK makes goes through a recording fetch and is reported.
// ES modules ignore NODE_PATH, so the SDK is imported by path from NODE_PATH.
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

const modules = process.env.NODE_PATH;
if (!modules) throw new Error('NODE_PATH must point at .interop/node_modules');
const sdk = (rel) => import(pathToFileURL(path.join(modules, '@modelcontextprotocol/sdk/dist/esm', rel)).href);
const { Client } = await sdk('client/index.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const { UnauthorizedError, discoverOAuthProtectedResourceMetadata, extractResourceMetadataUrl } =
  await sdk('client/auth.js');

const [mode, serverUrl, ...rest] = process.argv.slice(2);
const REDIRECT = 'http://127.0.0.1:9/callback';

const requests = [];
async function recordingFetch(input, init) {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
  const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
  const res = await fetch(input, init);
  requests.push({
    method,
    url,
    status: res.status,
    www_authenticate: res.headers.get('www-authenticate'),
  });
  return res;
}

function describeError(e) {
  return {
    name: e?.constructor?.name ?? typeof e,
    message: String(e?.message ?? e),
    code: e?.code ?? null,
    unauthorized: e instanceof UnauthorizedError,
  };
}

function newClient() {
  return new Client({ name: 'mcp-oauth-interop', version: '1.0.0' });
}

function textOf(result) {
  return (result?.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('');
}

async function discovery([clientId, issuer]) {
  let authorizationUrl = null;
  let codeVerifier = null;
  const provider = {
    get redirectUrl() {
      return REDIRECT;
    },
    get clientMetadata() {
      return {
        client_name: 'mcp-oauth interop',
        redirect_uris: [REDIRECT],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      };
    },
    clientInformation() {
      return { client_id: clientId, issuer };
    },
    tokens() {
      return undefined;
    },
    saveTokens() {
      throw new Error('no token exchange is expected');
    },
    redirectToAuthorization(url) {
      // Where a real client would open the browser.
      authorizationUrl = url.href;
    },
    saveCodeVerifier(v) {
      codeVerifier = v;
    },
    codeVerifier() {
      return codeVerifier;
    },
  };

  const out = { mode: 'discovery' };
  const transport = new StreamableHTTPClientTransport(new URL(serverUrl), {
    authProvider: provider,
    fetch: recordingFetch,
  });
  try {
    await newClient().connect(transport);
    out.connected = true;
  } catch (e) {
    out.connected = false;
    out.error = describeError(e);
  }
  out.authorization_url = authorizationUrl;
  out.code_verifier_saved = Boolean(codeVerifier);
  out.requests = requests.splice(0);

  // The SDK's helpers on their own: the 401 of a bare initialize, and RFC 9728 discovery.
  const init = {
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: {
      protocolVersion: '2025-11-25',
      capabilities: {},
      clientInfo: { name: 'mcp-oauth-interop', version: '1.0.0' },
    },
  };
  const res = await fetch(serverUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify(init),
  });
  await res.body?.cancel();
  out.bare_initialize_status = res.status;
  out.header_resource_metadata = extractResourceMetadataUrl(res)?.href ?? null;
  out.discovered_prm = await discoverOAuthProtectedResourceMetadata(serverUrl);
  return out;
}

async function lazy() {
  const out = { mode: 'lazy' };
  const client = newClient();
  await client.connect(new StreamableHTTPClientTransport(new URL(serverUrl), { fetch: recordingFetch }));
  out.connected = true;
  out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
  const echo = await client.callTool({ name: 'public_echo', arguments: { text: 'hello from the TypeScript SDK' } });
  out.echo = { text: textOf(echo), is_error: Boolean(echo.isError) };
  try {
    const r = await client.callTool({ name: 'whoami', arguments: {} });
    out.whoami = { text: textOf(r), is_error: Boolean(r.isError) };
  } catch (e) {
    out.whoami_error = describeError(e);
  }
  out.requests = requests.splice(0);
  await client.close();
  return out;
}

async function withToken([accessToken]) {
  const out = { mode: 'token' };
  const provider = {
    get redirectUrl() {
      return REDIRECT;
    },
    get clientMetadata() {
      return { client_name: 'mcp-oauth interop', redirect_uris: [REDIRECT] };
    },
    clientInformation() {
      return undefined;
    },
    tokens() {
      return { access_token: accessToken, token_type: 'Bearer' };
    },
    saveTokens() {},
    redirectToAuthorization(url) {
      throw new Error(`unexpected authorization redirect to ${url.href}`);
    },
    saveCodeVerifier() {},
    codeVerifier() {
      return '';
    },
  };
  const client = newClient();
  await client.connect(
    new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider, fetch: recordingFetch }),
  );
  out.connected = true;
  out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
  const who = await client.callTool({ name: 'whoami', arguments: {} });
  out.whoami = { text: textOf(who), is_error: Boolean(who.isError) };
  const secret = await client.callTool({ name: 'secret_read', arguments: {} });
  out.secret_read = { text: textOf(secret), is_error: Boolean(secret.isError) };
  out.requests = requests.splice(0);
  await client.close();
  return out;
}

const modes = { discovery, lazy, token: withToken };
try {
  if (!modes[mode] || !serverUrl) throw new Error(`usage: ts_client_discovery.mjs discovery|lazy|token <mcp-url> ...`);
  const out = await modes[mode](rest);
  console.log(JSON.stringify(out));
  process.exit(0);
} catch (e) {
  console.log(JSON.stringify({ mode, fatal: describeError(e), stack: String(e?.stack ?? ''), requests }));
  process.exit(1);
}

// The official MCP TypeScript SDK client (@modelcontextprotocol/sdk, installed into .interop/
// by scripts/interop-setup.sh) through the whole OAuth flow against mcp-oauth's embedded
// authorization server (tests/interop_as_ts_sdk.rs runs it against the quickstart app).
//
//   node ts_client_full_flow.mjs <mcp-url> <redirect-uri> [<tool>]
//
// With <tool> (tests/readme.rs, against the README's program) the script only connects,
// lists the tools, calls <tool> through the authorization and reports; `./resolve.mjs`
// lets it reach a public-looking host name on 127.0.0.1 (MCP_OAUTH_TEST_RESOLVE).
//
// The SDK does everything itself: 401 → protected-resource metadata → authorization-server
// metadata → dynamic client registration → authorization URL (PKCE S256, state, resource) →
// code exchange → refresh → step-up on 403 insufficient_scope. The only thing it delegates
// is the browser: where a real client opens one, the provider prints
//   {"event":"authorize","url":"<authorization URL>"}
// and the test's headless browser logs in, approves, and writes the callback URL back on
// stdin (one line), as a real client's redirect listener would receive it.
//
// Steps:
//   1. connect without a token (lazy authentication), list tools, call public_search;
//   2. call files_read → 401 → the SDK authorizes → UnauthorizedError → callback →
//      transport.finishAuth(code) → reconnect → files_read succeeds;
//   3. the stored access token is replaced by garbage, so the next call gets 401
//      invalid_token and the SDK refreshes with the stored refresh token by itself;
//   4. files_write → 403 insufficient_scope → the SDK's step-up. SDK 1.32.2 first tries
//      its refresh token (a refresh cannot widen scope, so the retry gets the same 403 and
//      it gives up); that outcome is reported as `step_up_native`. Then the client is
//      reconnected with the refresh token withheld, which makes the SDK re-authorize with the
//      challenged scope, and files_write succeeds.
//
// The last stdout line is {"event":"report",...}; every HTTP request the SDK made is in it.
import './resolve.mjs';
import { MemoryProvider, callbackReader, sdk, textOf } from './sdk_client.mjs';

const { Client } = await sdk('client/index.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const { UnauthorizedError } = await sdk('client/auth.js');

const [serverUrl, redirectUrl, onlyTool] = process.argv.slice(2);
if (!serverUrl || !redirectUrl) throw new Error('usage: ts_client_full_flow.mjs <mcp-url> <redirect-uri> [<tool>]');

const nextCallback = callbackReader();

const requests = [];
function formOf(init) {
  const body = init?.body;
  if (body instanceof URLSearchParams) return Object.fromEntries(body);
  if (typeof body === 'string' && !body.trimStart().startsWith('{')) return Object.fromEntries(new URLSearchParams(body));
  return undefined;
}
async function recordingFetch(input, init) {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
  const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
  const entry = { method, url };
  const form = formOf(init);
  if (form) {
    if (form.code_verifier) form.code_verifier = `<${form.code_verifier.length} chars>`;
    for (const k of ['code', 'refresh_token']) if (form[k]) form[k] = '<redacted>';
    entry.form = form;
  } else if (typeof init?.body === 'string' && url.endsWith('/register')) {
    entry.json = JSON.parse(init.body);
  } else if (typeof init?.body === 'string') {
    try {
      const msg = JSON.parse(init.body);
      entry.rpc = msg.method === 'tools/call' ? `tools/call ${msg.params?.name}` : msg.method;
    } catch {}
  }
  entry.authorization = new Headers(init?.headers).get('authorization') ? 'Bearer' : null;
  const res = await fetch(input, init);
  entry.status = res.status;
  entry.www_authenticate = res.headers.get('www-authenticate');
  requests.push(entry);
  return res;
}

function claimsOf(jwt) {
  try {
    return JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url').toString('utf8'));
  } catch {
    return null;
  }
}

function describeError(e) {
  return {
    name: e?.constructor?.name ?? typeof e,
    message: String(e?.message ?? e),
    code: e?.code ?? null,
    unauthorized: e instanceof UnauthorizedError,
  };
}

// An OAuthClientProvider with in-memory storage, as the SDK's examples write one.
const provider = new MemoryProvider(redirectUrl, 'mcp-oauth interop (TypeScript SDK)', process.env.MCP_OAUTH_TEST_CLIENT_METADATA_URL || undefined);
const out = { event: 'report', steps: {} };

async function connect() {
  const client = new Client({ name: 'mcp-oauth-interop', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider, fetch: recordingFetch });
  await client.connect(transport);
  return { client, transport };
}

// Receives the browser's callback, checks it as a careful client does, and finishes auth.
async function completeAuthorization(transport) {
  const callback = await nextCallback();
  const issuer = provider.discoveryState()?.authorizationServerMetadata?.issuer ?? null;
  const check = {
    callback_origin_path: `${callback.origin}${callback.pathname}`,
    state_matches: callback.searchParams.get('state') === provider.states.at(-1),
    iss: callback.searchParams.get('iss'),
    iss_matches_metadata: callback.searchParams.get('iss') === issuer,
    error: callback.searchParams.get('error'),
    code_present: Boolean(callback.searchParams.get('code')),
  };
  if (check.error) throw new Error(`authorization failed: ${check.error} ${callback.searchParams.get('error_description')}`);
  if (!check.state_matches) throw new Error(`state mismatch in ${callback.href}`);
  await transport.finishAuth(callback.searchParams.get('code'));
  return check;
}

// Calls a tool; when the SDK stops for the browser (UnauthorizedError), completes the
// authorization and calls again on a fresh connection, as the SDK's docs describe.
async function callWithAuthorization(conn, name, args) {
  try {
    return { conn, result: textOf(await conn.client.callTool({ name, arguments: args })), authorized: null };
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
    const authorized = await completeAuthorization(conn.transport);
    await conn.client.close();
    const fresh = await connect();
    return { conn: fresh, result: textOf(await fresh.client.callTool({ name, arguments: args })), authorized };
  }
}

function report(code) {
  out.authorization_urls = provider.authorizationUrls;
  out.requests = requests;
  console.log(JSON.stringify(out));
  process.exit(code);
}

try {
  if (onlyTool) {
    // Connect without a token, list, then call the one tool through the authorization.
    let conn = await connect();
    out.steps.anonymous = { tools: (await conn.client.listTools()).tools.map((t) => t.name).sort() };
    const r = await callWithAuthorization(conn, onlyTool, {});
    out.steps.authorize = { [onlyTool]: r.result, callback: r.authorized, claims: claimsOf(provider.tokens()?.access_token ?? '') };
    await r.conn.client.close();
    report(0);
  }
  // 1. Anonymous: lazy authentication lets the handshake, listing and the public tool through.
  let conn = await connect();
  out.steps.anonymous = {
    tools: (await conn.client.listTools()).tools.map((t) => t.name).sort(),
    public_search: textOf(await conn.client.callTool({ name: 'public_search', arguments: { query: 'txt' } })),
    had_token: provider.tokens() !== undefined,
  };

  // 2. The first protected call: 401, discovery, registration, authorization, code exchange.
  let r = await callWithAuthorization(conn, 'files_read', { path: 'welcome.txt' });
  conn = r.conn;
  const first = provider.tokens();
  out.steps.authorize = {
    files_read: r.result,
    callback: r.authorized,
    client_id: provider.clientInformation()?.client_id ?? null,
    token_type: first?.token_type,
    scope: first?.scope ?? null,
    expires_in: first?.expires_in ?? null,
    has_refresh_token: Boolean(first?.refresh_token),
    claims: claimsOf(first?.access_token ?? ''),
  };

  // 3. Refresh: the access token is now garbage, so the server answers 401 invalid_token and
  //    the SDK refreshes with the stored refresh token, then retries.
  const before = provider.tokens();
  provider._tokens = { ...before, access_token: 'garbage-access-token-set-by-the-test' };
  const refreshed = textOf(await conn.client.callTool({ name: 'files_read', arguments: { path: 'welcome.txt' } }));
  const after = provider.tokens();
  out.steps.refresh = {
    files_read: refreshed,
    access_token_changed: after.access_token !== before.access_token && after.access_token !== 'garbage-access-token-set-by-the-test',
    refresh_token_rotated: Boolean(after.refresh_token) && after.refresh_token !== before.refresh_token,
    scope: after.scope ?? null,
    claims: claimsOf(after.access_token),
    authorizations_so_far: provider.authorizationUrls.length,
  };

  // 4. Step-up: files_write needs files:write, the token holds files:read.
  const native = {};
  try {
    r = await callWithAuthorization(conn, 'files_write', { path: 'notes/from-ts.txt', content: 'hello from the TypeScript SDK' });
    conn = r.conn;
    native.ok = true;
    native.files_write = r.result;
    native.callback = r.authorized;
  } catch (e) {
    native.ok = false;
    native.error = describeError(e);
  }
  native.authorizations = provider.authorizationUrls.length;
  out.steps.step_up_native = native;
  if (!native.ok) {
    // Withhold the refresh token so the SDK's 403 handling has to re-authorize.
    await conn.client.close().catch(() => {});
    const { refresh_token: _dropped, ...withoutRefresh } = provider.tokens();
    provider._tokens = withoutRefresh;
    conn = await connect();
    r = await callWithAuthorization(conn, 'files_write', { path: 'notes/from-ts.txt', content: 'hello from the TypeScript SDK' });
    conn = r.conn;
    out.steps.step_up = { files_write: r.result, callback: r.authorized };
  } else {
    out.steps.step_up = { files_write: native.files_write, callback: native.callback };
  }
  const last = provider.tokens();
  out.steps.step_up.scope = last?.scope ?? null;
  out.steps.step_up.claims = claimsOf(last?.access_token ?? '');
  out.steps.step_up.files_read = textOf(await conn.client.callTool({ name: 'files_read', arguments: { path: 'notes/from-ts.txt' } }));
  await conn.client.close();
  report(0);
} catch (e) {
  out.fatal = describeError(e);
  out.stack = String(e?.stack ?? '');
  report(1);
}

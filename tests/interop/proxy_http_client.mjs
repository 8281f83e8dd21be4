// The official MCP TypeScript SDK client through mcp-oauth-proxy in front of an HTTP MCP
// server that knows nothing of OAuth (tests/interop/proxy_fixture_server.py in `http` mode;
// proxy/tests/http_sdk_clients.rs runs it).
//
//   node proxy_http_client.mjs <proxy-mcp-url> <redirect-uri>
//
// Every call needs a token (the proxy's default policy), so the first `initialize` is
// answered 401: the SDK discovers the proxy's metadata, registers, and asks for the browser
// ({"event":"authorize","url":...} on stdout; the test's scripted browser signs in, consents
// and writes the callback URL back on stdin), exchanges the code, and connects again. Then it
// lists the tools, calls `echo`, and calls `slow`, recording when each progress notification
// and the result arrived (milliseconds since the call), so the test can check that the
// progress was streamed through the proxy before the result, not delivered with it.
//
// The last stdout line is {"event":"report",...}.
import * as path from 'node:path';
import * as readline from 'node:readline';
import { pathToFileURL } from 'node:url';

const modules = process.env.NODE_PATH;
if (!modules) throw new Error('NODE_PATH must point at .interop/node_modules');
const sdk = (rel) => import(pathToFileURL(path.join(modules, '@modelcontextprotocol/sdk/dist/esm', rel)).href);
const { Client } = await sdk('client/index.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const { UnauthorizedError } = await sdk('client/auth.js');

const [serverUrl, redirectUrl] = process.argv.slice(2);
if (!serverUrl || !redirectUrl) throw new Error('usage: proxy_http_client.mjs <mcp-url> <redirect-uri>');

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function nextCallback() {
  const { value, done } = await lines.next();
  if (done) throw new Error('stdin closed before the callback URL arrived');
  return new URL(value.trim());
}

const requests = [];
async function recordingFetch(input, init) {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
  const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
  const entry = { method, url, authorization: new Headers(init?.headers).get('authorization') ? 'Bearer' : null };
  const res = await fetch(input, init);
  entry.status = res.status;
  requests.push(entry);
  return res;
}

class MemoryProvider {
  constructor() {
    this._client = undefined;
    this._tokens = undefined;
    this._verifier = undefined;
    this.states = [];
    this.authorizationUrls = [];
  }
  get redirectUrl() {
    return redirectUrl;
  }
  get clientMetadata() {
    return {
      client_name: 'mcp-oauth-proxy interop (TypeScript SDK)',
      redirect_uris: [redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    };
  }
  state() {
    const s = crypto.randomUUID();
    this.states.push(s);
    return s;
  }
  clientInformation() {
    return this._client;
  }
  saveClientInformation(info) {
    this._client = info;
  }
  tokens() {
    return this._tokens;
  }
  saveTokens(tokens) {
    this._tokens = tokens;
  }
  redirectToAuthorization(url) {
    this.authorizationUrls.push(url.href);
    console.log(JSON.stringify({ event: 'authorize', url: url.href }));
  }
  saveCodeVerifier(v) {
    this._verifier = v;
  }
  codeVerifier() {
    if (!this._verifier) throw new Error('no code verifier saved');
    return this._verifier;
  }
}

const provider = new MemoryProvider();
const out = { event: 'report', steps: {} };

function newConnection() {
  const client = new Client({ name: 'mcp-oauth-proxy-interop', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider, fetch: recordingFetch });
  return { client, transport };
}

function textOf(result) {
  return {
    text: (result?.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join(''),
    is_error: Boolean(result?.isError),
  };
}

function report(code) {
  out.authorization_urls = provider.authorizationUrls;
  out.requests = requests;
  console.log(JSON.stringify(out));
  process.exit(code);
}

try {
  // 1. The first connection is refused (401): the SDK authorizes, then we connect again.
  let conn = newConnection();
  let unauthorized = false;
  try {
    await conn.client.connect(conn.transport);
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
    unauthorized = true;
    const callback = await nextCallback();
    if (callback.searchParams.get('error')) throw new Error(`authorization failed: ${callback.searchParams.get('error')}`);
    if (callback.searchParams.get('state') !== provider.states.at(-1)) throw new Error('state mismatch');
    await conn.transport.finishAuth(callback.searchParams.get('code'));
    conn = newConnection();
    await conn.client.connect(conn.transport);
  }
  out.steps.connect = {
    unauthorized_first: unauthorized,
    has_token: Boolean(provider.tokens()?.access_token),
    session_id: conn.transport.sessionId ?? null,
  };

  // 2. The upstream's tools, through the proxy.
  out.steps.tools = (await conn.client.listTools()).tools.map((t) => t.name).sort();
  out.steps.echo = textOf(await conn.client.callTool({ name: 'echo', arguments: { text: 'hello through the proxy' } }));

  // 3. Progress notifications streamed before the result.
  const progress = [];
  const start = performance.now();
  const result = await conn.client.callTool({ name: 'slow', arguments: { steps: 3, delay: 0.5 } }, undefined, {
    onprogress: (p) => progress.push({ progress: p.progress, total: p.total ?? null, message: p.message ?? null, at_ms: performance.now() - start }),
    timeout: 60000,
  });
  out.steps.slow = { ...textOf(result), result_at_ms: performance.now() - start, progress };
  await conn.client.close();
  report(0);
} catch (e) {
  out.fatal = { name: e?.constructor?.name ?? typeof e, message: String(e?.message ?? e), unauthorized: e instanceof UnauthorizedError };
  out.stack = String(e?.stack ?? '');
  report(1);
}

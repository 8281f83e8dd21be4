// The official MCP TypeScript SDK client (@modelcontextprotocol/sdk, installed into .interop/
// by scripts/interop-setup.sh) against mcp-oauth-proxy (whatever is behind it: a stdio child
// or an HTTP upstream serving tests/interop/proxy_fixture_server.py's tools).
//
//   node proxy_client.mjs <mcp-url> <redirect-uri> [<steps> <delay>]
//
// The first connection gets 401: the SDK discovers the protected-resource and authorization-
// server metadata, registers, and hands the authorization URL to the provider, which prints
//   {"event":"authorize","url":"<authorization URL>"}
// where a real client opens the browser; the test's scripted browser logs in, consents and
// writes the callback URL back on stdin (one line). The script then calls
// transport.finishAuth(code) and connects again, as the SDK's docs describe.
//
// Then: list tools, call `whoami`, `echo`, and `slow` (`steps` progress notifications, `delay`
// seconds apart; default 3 and 0.4) with an onprogress handler. Each step prints a JSON line
// {"event":"step","name":...}; the last line is {"event":"report",...} with every step's result,
// the progress notifications (each with `at`, seconds since the call; their count, and how long
// before the result the first one arrived) and every HTTP request's method, URL and status (no
// tokens). proxy/tests/{stdio,http}_sdk_clients.rs run it.
import { MemoryProvider, callbackReader, sdk, textOf } from './sdk_client.mjs';

const { Client } = await sdk('client/index.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const { UnauthorizedError } = await sdk('client/auth.js');

const [serverUrl, redirectUrl, stepsArg, delayArg] = process.argv.slice(2);
if (!serverUrl || !redirectUrl) throw new Error('usage: proxy_client.mjs <mcp-url> <redirect-uri> [<steps> <delay>]');
const STEPS = Number(stepsArg ?? 3);
const DELAY = Number(delayArg ?? 0.4);

const nextCallback = callbackReader();

const requests = [];
async function recordingFetch(input, init) {
  const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
  const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
  const entry = { method, url };
  if (typeof init?.body === 'string' && url === serverUrl) {
    try {
      const msg = JSON.parse(init.body);
      entry.rpc = msg.method === 'tools/call' ? `tools/call ${msg.params?.name}` : msg.method;
    } catch {}
  }
  entry.authorization = new Headers(init?.headers).get('authorization') ? 'Bearer' : null;
  const res = await fetch(input, init);
  entry.status = res.status;
  entry.content_type = res.headers.get('content-type');
  entry.session = res.headers.has('mcp-session-id');
  requests.push(entry);
  return res;
}

const provider = new MemoryProvider(redirectUrl, 'mcp-oauth-proxy interop (TypeScript SDK)');
const out = { event: 'report', client: 'typescript', steps: {} };

function step(name, fields) {
  const line = { event: 'step', name, ...fields };
  console.log(JSON.stringify(line));
  return line;
}

function newTransport() {
  return new StreamableHTTPClientTransport(new URL(serverUrl), { authProvider: provider, fetch: recordingFetch });
}

async function connect(transport) {
  const client = new Client({ name: 'mcp-oauth-proxy-interop', version: '1.0.0' });
  await client.connect(transport);
  return { client, transport };
}

// Connects; on 401 completes the authorization through the browser (the transport that asked
// for it finishes it) and connects again on a fresh transport.
async function connectWithAuthorization() {
  const first = newTransport();
  try {
    return { conn: await connect(first), authorized: false };
  } catch (e) {
    if (!(e instanceof UnauthorizedError)) throw e;
    const callback = await nextCallback();
    if (callback.searchParams.get('error')) throw new Error(`authorization failed: ${callback.searchParams.get('error')}`);
    if (callback.searchParams.get('state') !== provider.states.at(-1)) throw new Error(`state mismatch in ${callback.href}`);
    await first.finishAuth(callback.searchParams.get('code'));
    return { conn: await connect(newTransport()), authorized: true };
  }
}

function report(code) {
  out.requests = requests;
  console.log(JSON.stringify(out));
  process.exit(code);
}

try {
  const { conn, authorized } = await connectWithAuthorization();
  const { client, transport } = conn;
  out.steps.initialize = step('initialize', {
    authorized,
    protocol_version: transport.protocolVersion ?? null,
    server: client.getServerVersion()?.name ?? null,
    session: Boolean(transport.sessionId),
  });
  out.steps.tools = step('tools', { names: (await client.listTools()).tools.map((t) => t.name).sort() });
  out.steps.whoami = step('whoami', textOf(await client.callTool({ name: 'whoami', arguments: {} })));
  out.steps.echo = step('echo', textOf(await client.callTool({ name: 'echo', arguments: { text: 'hello through the proxy' } })));

  const progress = [];
  const started = performance.now();
  const result = await client.callTool({ name: 'slow', arguments: { steps: STEPS, delay: DELAY } }, undefined, {
    onprogress: (p) => progress.push({ progress: p.progress, total: p.total ?? null, message: p.message ?? null, at: (performance.now() - started) / 1000 }),
  });
  const doneAt = (performance.now() - started) / 1000;
  out.steps.slow = step('slow', {
    ...textOf(result),
    progress_count: progress.length,
    progress,
    result_at: doneAt,
    first_progress_at: progress[0]?.at ?? null,
    first_progress_before_result: progress.length ? doneAt - progress[0].at : null,
  });
  await transport.terminateSession();
  await client.close();
  report(0);
} catch (e) {
  out.fatal = { name: e?.constructor?.name ?? typeof e, message: String(e?.message ?? e), stack: String(e?.stack ?? '') };
  report(1);
}

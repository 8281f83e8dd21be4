// A real third-party authorization server for the interop tests: panva's oidc-provider 9
// (installed into .interop/ by scripts/interop-setup.sh), configured the way an MCP resource
// server meets it in production:
//
// - client_credentials grant for statically registered confidential clients
//   (`test-client` / `test-secret` mints tokens, `rs-client` / `rs-secret` introspects, and
//   `rs:odd client` / `p@ss w:rd%+&=` introspects with characters that must be encoded);
// - RFC 8707 resource indicators: JWT access tokens (RFC 9068, `typ: at+jwt`, signed with
//   OIDC_JWT_ALG, ES256 by default) for every URL in OIDC_JWT_RESOURCES (space-separated),
//   opaque tokens for OIDC_OPAQUE_RESOURCE;
// - RFC 7662 introspection and RFC 7009 revocation;
// - with OIDC_INTERACTIVE=1, what an MCP client needs to sign a user in there: open RFC 7591
//   dynamic registration (no initial access token) and the provider's development login and
//   consent pages (any login name with any password; the consent page is one "Continue"
//   button), so the authorization code flow with PKCE and `resource` runs end to end.
//
// It listens on 127.0.0.1 with an OS-chosen port and prints exactly one JSON line on stdout:
//   {"issuer":"http://127.0.0.1:PORT","port":PORT}
// (the issuer has no trailing slash). Logs go to stderr. It exits when its stdin closes.
//
// Upstream login (UpstreamOidc): when OIDC_UPSTREAM_REDIRECT_URI is set, a confidential web
// client `mcp-upstream` / `upstream-secret` (client_secret_basic, authorization_code) may send
// users back to that URI, and the provider's development login and consent pages are on.
// Any login name signs in: the account's `sub` is the name, `email` is the name when it holds
// an `@` (else `NAME@example.com`, verified), `name` is the name, `groups` is `["admins"]` for
// names starting with `admin`, else `["users"]` (scope `groups`).
//
// Test hooks, outside the provider's own routes:
//   POST /__admin/rotate  swaps in a new Provider instance (same issuer and port, same token
//                         store) whose keystore lists a freshly generated signing key first,
//                         followed by every earlier key; answers {"kid": "<new kid>"}.
//   GET  /__admin/stats   {"jwks_fetches": n, "introspections": m} — requests to the JWKS and
//                         introspection endpoints seen so far.
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

// ES modules ignore NODE_PATH, so resolve the package through it explicitly.
const require = createRequire(path.join(process.env.NODE_PATH || process.cwd(), 'noop.js'));
const { default: Provider } = await import(pathToFileURL(require.resolve('oidc-provider')).href);

const jwtResources = (process.env.OIDC_JWT_RESOURCES || '').split(/\s+/).filter(Boolean);
const opaqueResource = process.env.OIDC_OPAQUE_RESOURCE || '';
const jwtAlg = process.env.OIDC_JWT_ALG || 'ES256';
const SCOPES = 'read write admin';
const interactive = process.env.OIDC_INTERACTIVE === '1';
const upstreamRedirect = process.env.OIDC_UPSTREAM_REDIRECT_URI || '';

const log = (...args) => console.error('[oidc-provider]', ...args);

function generateKey(alg) {
  let pair;
  if (alg === 'ES256') {
    pair = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  } else if (alg === 'EdDSA') {
    pair = crypto.generateKeyPairSync('ed25519');
  } else if (alg.startsWith('RS') || alg.startsWith('PS')) {
    pair = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  } else {
    throw new Error(`unsupported OIDC_JWT_ALG ${alg}`);
  }
  const jwk = pair.privateKey.export({ format: 'jwk' });
  jwk.kid = `${alg.toLowerCase()}-${crypto.randomBytes(6).toString('hex')}`;
  jwk.alg = alg;
  jwk.use = 'sig';
  return jwk;
}

// Newest first: oidc-provider signs with the first key that fits the algorithm. An RS256 key
// is always present for ID tokens (the provider's default algorithm), which also puts a key
// of another type into the JWKS the verifier must skip.
const keys = [generateKey(jwtAlg)];
if (jwtAlg !== 'RS256') keys.push(generateKey('RS256'));

const server = http.createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

function makeProvider() {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: 'test-client',
        client_secret: 'test-secret',
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        client_id: 'rs-client',
        client_secret: 'rs-secret',
        grant_types: [],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      {
        // Characters that client_secret_basic must form-urlencode (RFC 6749 §2.3.1).
        client_id: 'rs:odd client',
        client_secret: 'p@ss w:rd%+&=',
        grant_types: [],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
      ...(upstreamRedirect
        ? [
            {
              client_id: 'mcp-upstream',
              client_secret: 'upstream-secret',
              grant_types: ['authorization_code'],
              redirect_uris: [upstreamRedirect],
              response_types: ['code'],
              token_endpoint_auth_method: 'client_secret_basic',
            },
          ]
        : []),
    ],
    findAccount: async (_ctx, id) => ({
      accountId: id,
      claims: async () => ({
        sub: id,
        email: id.includes('@') ? id : `${id}@example.com`,
        email_verified: true,
        name: id,
        groups: id.startsWith('admin') ? ['admins'] : ['users'],
      }),
    }),
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name'],
      groups: ['groups'],
    },
    jwks: { keys },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'groups', ...SCOPES.split(' ')],
    ttl: { ClientCredentials: 600, AccessToken: 600 },
    features: {
      devInteractions: { enabled: interactive || Boolean(upstreamRedirect) },
      registration: { enabled: interactive },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf || jwtResources[0],
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx, resource) => {
          if (jwtResources.includes(resource)) {
            return {
              scope: SCOPES,
              audience: resource,
              accessTokenTTL: 600,
              accessTokenFormat: 'jwt',
              jwt: { sign: { alg: jwtAlg } },
            };
          }
          if (resource === opaqueResource) {
            return {
              scope: SCOPES,
              audience: resource,
              accessTokenTTL: 600,
              accessTokenFormat: 'opaque',
            };
          }
          throw new Provider.errors.InvalidTarget();
        },
      },
    },
  });
  provider.on('server_error', (_ctx, err) => log('server_error', err));
  return provider;
}

let provider = makeProvider();
let handler = provider.callback();
let jwksFetches = 0;
let introspections = 0;

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

server.on('request', (req, res) => {
  const path = new URL(req.url, issuer).pathname;
  if (path === '/__admin/stats' && req.method === 'GET') {
    json(res, 200, { jwks_fetches: jwksFetches, introspections });
    return;
  }
  if (path === '/__admin/rotate' && req.method === 'POST') {
    const fresh = generateKey(jwtAlg);
    keys.unshift(fresh);
    provider = makeProvider();
    handler = provider.callback();
    log('rotated to', fresh.kid);
    json(res, 200, { kid: fresh.kid });
    return;
  }
  if (path === '/jwks') jwksFetches += 1;
  if (path === '/token/introspection') introspections += 1;
  handler(req, res);
});

console.log(JSON.stringify({ issuer, port }));
log('listening', issuer, 'jwt resources', jwtResources, 'opaque resource', opaqueResource);

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => process.exit(0));
}
// The test holds our stdin open; when it exits (even without running destructors), the pipe
// closes and so do we, leaving no orphan behind.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

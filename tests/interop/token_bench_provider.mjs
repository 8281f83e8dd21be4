// panva's oidc-provider 9 set up for benches/token_endpoint.rs: the token endpoint of a
// certified authorization server, to compare ours with on the same machine.
//
// - One public native client `bench-client` (PKCE S256, `none` auth, redirect
//   http://127.0.0.1/callback, grants authorization_code and refresh_token).
// - RFC 8707: access tokens for BENCH_RESOURCE are RFC 9068 JWTs signed with ES256 (as ours).
// - Refresh tokens rotate on every use (the default for public clients), as ours do.
// - Its default in-memory adapter holds grants, codes and refresh tokens.
//
// Bench hook (outside the provider's routes): POST /__bench/codes?n=N creates N grants and
// authorization codes for user `alice` (scope `offline_access read`; no `openid`, so no ID token is signed, the resource,
// the challenge of BENCH_VERIFIER) without the browser steps, and answers a JSON array of
// the codes. The bench times only the token requests.
//
// Prints {"issuer":"http://127.0.0.1:PORT","port":PORT} on stdout; exits when stdin closes.
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';

const require = createRequire(path.join(process.env.NODE_PATH || process.cwd(), 'noop.js'));
const { default: Provider } = await import(pathToFileURL(require.resolve('oidc-provider')).href);

const RESOURCE = process.env.BENCH_RESOURCE || 'http://127.0.0.1:8000/mcp';
const VERIFIER = process.env.BENCH_VERIFIER;
const REDIRECT = 'http://127.0.0.1/callback';
const CHALLENGE = crypto.createHash('sha256').update(VERIFIER).digest('base64url');

const log = (...args) => console.error('[token-bench-provider]', ...args);

function key(alg) {
  const pair =
    alg === 'ES256'
      ? crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = pair.privateKey.export({ format: 'jwk' });
  jwk.kid = `${alg.toLowerCase()}-1`;
  jwk.alg = alg;
  jwk.use = 'sig';
  return jwk;
}

const server = http.createServer({ keepAliveTimeout: 60_000 });
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const { port } = server.address();
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'bench-client',
      application_type: 'native',
      grant_types: ['authorization_code', 'refresh_token'],
      redirect_uris: [REDIRECT],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
  ],
  findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => ({ sub: id }) }),
  jwks: { keys: [key('ES256'), key('RS256')] },
  scopes: ['openid', 'offline_access', 'read'],
  ttl: { AccessToken: 3600, AuthorizationCode: 600, RefreshToken: 30 * 24 * 3600, Grant: 30 * 24 * 3600 },
  features: {
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => RESOURCE,
      useGrantedResource: async () => true,
      getResourceServerInfo: async () => ({
        scope: 'read',
        audience: RESOURCE,
        accessTokenTTL: 3600,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
});
provider.on('server_error', (_ctx, err) => log('server_error', err));
const handler = provider.callback();
const client = await provider.Client.find('bench-client');

async function codes(n) {
  const out = [];
  for (let i = 0; i < n; i += 1) {
    const grant = new provider.Grant({ accountId: 'alice', clientId: 'bench-client' });
    grant.addOIDCScope('offline_access');
    grant.addResourceScope(RESOURCE, 'read');
    const grantId = await grant.save();
    const code = new provider.AuthorizationCode({
      accountId: 'alice',
      grantId,
      client,
      scope: 'offline_access read',
      resource: RESOURCE,
      redirectUri: REDIRECT,
      codeChallenge: CHALLENGE,
      codeChallengeMethod: 'S256',
      authTime: Math.floor(Date.now() / 1000),
      expiresWithSession: false,
    });
    out.push(await code.save());
  }
  return out;
}

server.on('request', (req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/__bench/codes' && req.method === 'POST') {
    codes(Number(url.searchParams.get('n') || '1')).then(
      (list) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(list));
      },
      (err) => {
        log('codes', err);
        res.writeHead(500);
        res.end(String(err));
      },
    );
    return;
  }
  handler(req, res);
});

console.log(JSON.stringify({ issuer, port }));
process.on('SIGTERM', () => process.exit(0));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();

// What the TypeScript SDK client scripts share (ts_client_full_flow.mjs, proxy_client.mjs):
// the SDK loaded from .interop/node_modules, the callback URL read from stdin, and an
// OAuthClientProvider with in-memory storage, as the SDK's examples write one.
//
// ES modules ignore NODE_PATH, so the SDK is imported by path from NODE_PATH.
import * as path from 'node:path';
import * as readline from 'node:readline';
import { pathToFileURL } from 'node:url';

const modules = process.env.NODE_PATH;
if (!modules) throw new Error('NODE_PATH must point at .interop/node_modules');

/** Imports a module of the SDK's ESM build, e.g. `client/index.js`. */
export const sdk = (rel) => import(pathToFileURL(path.join(modules, '@modelcontextprotocol/sdk/dist/esm', rel)).href);

/** Returns a function that resolves to the next callback URL the test writes on stdin. */
export function callbackReader() {
  const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  return async function nextCallback() {
    const { value, done } = await lines.next();
    if (done) throw new Error('stdin closed before the callback URL arrived');
    return new URL(value.trim());
  };
}

/**
 * An OAuthClientProvider with in-memory storage. It prints
 * {"event":"authorize","url":"..."} where a real client opens the browser, and remembers the
 * states it made, the authorization URLs and every token set it was given.
 */
export class MemoryProvider {
  constructor(redirectUrl, clientName, clientMetadataUrl = undefined) {
    this._redirectUrl = redirectUrl;
    this._clientName = clientName;
    this._clientMetadataUrl = clientMetadataUrl;
    this._client = undefined;
    this._tokens = undefined;
    this._verifier = undefined;
    this._discovery = undefined;
    this.states = [];
    this.authorizationUrls = [];
    this.savedTokens = [];
  }
  get redirectUrl() {
    return this._redirectUrl;
  }
  // A client ID metadata document URL, when the test serves one: the SDK then uses it as
  // its client_id instead of registering (if the server advertises support).
  get clientMetadataUrl() {
    return this._clientMetadataUrl;
  }
  get clientMetadata() {
    return {
      client_name: this._clientName,
      redirect_uris: [this._redirectUrl],
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
    this.savedTokens.push(tokens);
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
  saveDiscoveryState(state) {
    this._discovery = state;
  }
  discoveryState() {
    return this._discovery;
  }
}

/** A tool result's text content joined, and whether it is an error. */
export function textOf(result) {
  return {
    text: (result?.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join(''),
    is_error: Boolean(result?.isError),
  };
}

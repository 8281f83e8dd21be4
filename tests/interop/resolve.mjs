// Sends connections for one host name to 127.0.0.1, as a line in /etc/hosts would, so a
// client can reach a server under a public-looking name (`MCP_OAUTH_TEST_RESOLVE=name`): the
// name stays in the client's URLs, its `Host` header and its TLS server name; only the
// address lookup is answered here. Without the variable nothing changes.
import dns from 'node:dns';

const name = process.env.MCP_OAUTH_TEST_RESOLVE?.toLowerCase();
if (name) {
  const lookup = dns.lookup;
  dns.lookup = function (hostname, options, callback) {
    if (typeof options === 'function') {
      callback = options;
      options = {};
    }
    if (typeof options === 'number') options = { family: options };
    if (String(hostname).toLowerCase() !== name) return lookup.call(this, hostname, options, callback);
    if (options?.all) return process.nextTick(callback, null, [{ address: '127.0.0.1', family: 4 }]);
    return process.nextTick(callback, null, '127.0.0.1', 4);
  };
}

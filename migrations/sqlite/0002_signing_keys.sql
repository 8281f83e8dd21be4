-- mcp-oauth store, version 2 (SQLite): signing keys shared by every instance.
-- Never edit an applied migration: add a new numbered file instead.

-- The signing keys of each ring. `private_key` is the PKCS#8 DER private key, stored as is:
-- whoever reads this table can sign tokens, so protect the database file like a key file.
-- The current key has `retired_at` NULL; a retired key is published until `publish_until`,
-- then pruned. Times are seconds since the Unix epoch.
CREATE TABLE mcp_oauth_signing_keys (
    ring          TEXT    NOT NULL,
    kid           TEXT    NOT NULL,
    alg           TEXT    NOT NULL,
    private_key   BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    retired_at    INTEGER,
    publish_until INTEGER,
    PRIMARY KEY (ring, kid)
);
-- At most one current key per ring: the database itself refuses a second, so two instances
-- creating the first key (or rotating) at once cannot both succeed.
CREATE UNIQUE INDEX mcp_oauth_signing_keys_current ON mcp_oauth_signing_keys (ring)
    WHERE retired_at IS NULL;

-- mcp-oauth store, version 4 (SQLite): client assertion ids.
-- Never edit an applied migration: add a new numbered file instead.

-- The `jti` of every client assertion (RFC 7523 private_key_jwt) accepted, kept until the
-- assertion expires so that a replay is refused by every instance sharing the database:
-- `key` is the SHA-256 (hex) of the client id, a NUL and the `jti`; `expires_at` in seconds
-- since the epoch. Expired rows are dropped by the sweep.
CREATE TABLE mcp_oauth_assertion_ids (
    key        TEXT   PRIMARY KEY NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX mcp_oauth_assertion_ids_expires_at ON mcp_oauth_assertion_ids (expires_at);

-- mcp-oauth store, version 7 (PostgreSQL): upstream logins in progress.
-- Never edit an applied migration: add a new numbered file instead.

-- Logins at an upstream identity provider (UpstreamOidc) in progress, and finished ones
-- waiting for the browser to return to /authorize, so that any instance sharing the database
-- can finish a login another started. `key` is the SHA-256 (hex) of the record's bearer
-- handle (the `state`, or a cookie value); `record` is the authenticator's JSON (it holds a
-- PKCE verifier and a nonce: single-use, short-lived); `expires_at` in seconds since the
-- epoch. A record is taken (deleted) when used; expired rows are dropped by the sweep.
CREATE TABLE mcp_oauth_upstream_logins (
    key        TEXT   PRIMARY KEY NOT NULL,
    record     TEXT   NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX mcp_oauth_upstream_logins_expires_at ON mcp_oauth_upstream_logins (expires_at);

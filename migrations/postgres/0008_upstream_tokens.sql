-- mcp-oauth store, version 8 (PostgreSQL): upstream tokens kept for the host's own calls.
-- Never edit an applied migration: add a new numbered file instead.

-- The tokens an upstream identity provider issued at a user's login (UpstreamOidc with
-- keep_upstream_tokens), one row per (provider, our subject): `key` is the SHA-256 (hex) of
-- the provider, a NUL and the subject; `record` is sealed with AES-256-GCM before it reaches
-- the database (no plaintext token is ever stored); `updated_at` in seconds since the epoch.
CREATE TABLE mcp_oauth_upstream_tokens (
    key        TEXT   PRIMARY KEY NOT NULL,
    record     BYTEA  NOT NULL,
    updated_at BIGINT NOT NULL
);

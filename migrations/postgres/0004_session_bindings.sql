-- mcp-oauth store, version 4 (PostgreSQL): MCP session bindings.
-- Never edit an applied migration: add a new numbered file instead.

-- Which principal opened each MCP session, for every instance of the layer: `key` is the
-- SHA-256 of the session id (hex), `owner` the owner as JSON, `seen` its last use in seconds
-- since the epoch. A row idle for longer than the layer's idle timeout counts as absent and
-- is dropped when a session is bound.
CREATE TABLE mcp_oauth_sessions (
    key   TEXT   PRIMARY KEY NOT NULL,
    owner TEXT   NOT NULL,
    seen  BIGINT NOT NULL
);
CREATE INDEX mcp_oauth_sessions_seen ON mcp_oauth_sessions (seen);

-- mcp-oauth store, version 3 (PostgreSQL): idle-client retention and shared rate limits.
-- Never edit an applied migration: add a new numbered file instead.

-- The idle-client sweep asks, per client, whether any live family, code or pending request
-- still names it; these expression indexes answer that without a scan. The expressions must
-- stay identical to the ones in the sweep's statement.
CREATE INDEX mcp_oauth_families_client ON mcp_oauth_families (((record::jsonb) ->> 'client_id'));
CREATE INDEX mcp_oauth_codes_client ON mcp_oauth_codes (((record::jsonb) ->> 'client_id'));
CREATE INDEX mcp_oauth_pending_client ON mcp_oauth_pending (((record::jsonb) ->> 'client_id'));
-- The sweep also picks dynamic clients by their last use.
CREATE INDEX mcp_oauth_clients_last_used_at ON mcp_oauth_clients (source, last_used_at);

-- Rate-limit counters (GCRA): per key, the theoretical arrival time in milliseconds since the
-- epoch. A row whose `tat` has passed is a full bucket and may be dropped at any time.
-- `allowed` is the outcome of the last hit, read back by the same statement that wrote it.
CREATE TABLE mcp_oauth_rate_limits (
    key     TEXT    PRIMARY KEY NOT NULL,
    tat     BIGINT  NOT NULL,
    allowed BOOLEAN NOT NULL
);
CREATE INDEX mcp_oauth_rate_limits_tat ON mcp_oauth_rate_limits (tat);

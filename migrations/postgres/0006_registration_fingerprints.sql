-- mcp-oauth store, version 5 (PostgreSQL): deduplicated dynamic registration.
-- Never edit an applied migration: add a new numbered file instead.

-- The fingerprint (lower-case hex SHA-256) of the registration that created a dynamic
-- client; identical public registrations are answered with the newest client filed under it.
-- NULL for static clients and for clients registered before this version.
ALTER TABLE mcp_oauth_clients ADD COLUMN fingerprint TEXT;
CREATE INDEX mcp_oauth_clients_fingerprint ON mcp_oauth_clients (fingerprint, issued_at)
    WHERE fingerprint IS NOT NULL;

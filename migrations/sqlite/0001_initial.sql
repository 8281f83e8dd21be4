-- mcp-oauth store, version 1 (SQLite). Applied by SqliteStore on start; never edit an applied
-- migration: add a new numbered file instead. Secrets (codes, refresh tokens, client secrets)
-- are stored only as SHA-256 hashes. Times are seconds since the Unix epoch.

-- Registered clients. `record` is the client as JSON (its secret only as a hash);
-- `last_used_at` lives in its own column so that touching a client is a small update.
CREATE TABLE mcp_oauth_clients (
    client_id    TEXT    PRIMARY KEY NOT NULL,
    record       TEXT    NOT NULL,
    source       TEXT    NOT NULL,
    issued_at    INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL
) STRICT;

-- Authorization codes by hash. `used_by` is the refresh family bound at first redemption.
CREATE TABLE mcp_oauth_codes (
    code_hash  BLOB    PRIMARY KEY NOT NULL,
    record     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL,
    used_by    TEXT
) STRICT;
CREATE INDEX mcp_oauth_codes_expires_at ON mcp_oauth_codes (expires_at);

-- Refresh-token families. A row with a NULL `record` is the tombstone of a family revoked
-- before it was created. `keep_until` is when `sweep` may drop the row: the family's expiry,
-- or at least a day after its revocation (access tokens it issued may still be out there).
CREATE TABLE mcp_oauth_families (
    family_id           TEXT    PRIMARY KEY NOT NULL,
    record              TEXT,
    expires_at          INTEGER,
    revoked_at          INTEGER,
    current_hash        BLOB,
    previous_hash       BLOB,
    previous_rotated_at INTEGER,
    previous_sealed     BLOB,
    keep_until          INTEGER NOT NULL
) STRICT;
CREATE INDEX mcp_oauth_families_keep_until ON mcp_oauth_families (keep_until);

-- Every refresh token a family ever had, by hash (older ones detect reuse).
CREATE TABLE mcp_oauth_refresh_tokens (
    token_hash BLOB PRIMARY KEY NOT NULL,
    family_id  TEXT NOT NULL REFERENCES mcp_oauth_families (family_id) ON DELETE CASCADE
) STRICT;
CREATE INDEX mcp_oauth_refresh_tokens_family ON mcp_oauth_refresh_tokens (family_id);

-- Access tokens revoked one by one, until they expire.
CREATE TABLE mcp_oauth_revoked_tokens (
    jti        TEXT    PRIMARY KEY NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX mcp_oauth_revoked_tokens_expires_at ON mcp_oauth_revoked_tokens (expires_at);

-- Remembered consent per (subject, client); `scope` is a JSON string.
CREATE TABLE mcp_oauth_consents (
    subject    TEXT    NOT NULL,
    client_id  TEXT    NOT NULL,
    scope      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (subject, client_id)
) STRICT;

-- Pending authorization requests, keyed by the SHA-256 (hex) of their id.
CREATE TABLE mcp_oauth_pending (
    id_hash    TEXT    PRIMARY KEY NOT NULL,
    record     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX mcp_oauth_pending_expires_at ON mcp_oauth_pending (expires_at);

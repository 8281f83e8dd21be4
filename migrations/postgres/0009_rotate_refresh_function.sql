-- mcp-oauth store, version 9 (PostgreSQL): a refresh-token rotation in one round trip.
-- Never edit an applied migration: add a new numbered file instead.

-- Rotates refresh token `p_presented` of its family, with the grace-window rule, as the
-- store's rotate_refresh did in a transaction of four statements (lock the family, decide,
-- write, insert the successor): one call, one round trip, the same row lock. Returns one
-- row: `outcome` is 'rotated' (the presented token was current: `p_successor` is current
-- now, the presented one previous with `p_sealed`), 'grace' (the presented token is the
-- previous one inside `p_grace` seconds: `sealed` is what the winner stored), 'reused' (an
-- older token of a live family: the family is revoked now and kept `p_revoked_keep`
-- seconds) or 'invalid' (unknown, revoked or expired); `record` is the family's record.
-- An older binary does not call it, so it may run against this schema.
CREATE OR REPLACE FUNCTION mcp_oauth_rotate_refresh(
    p_presented BYTEA,
    p_successor BYTEA,
    p_sealed BYTEA,
    p_now BIGINT,
    p_grace BIGINT,
    p_revoked_keep BIGINT
) RETURNS TABLE (outcome TEXT, family_id TEXT, record TEXT, sealed BYTEA)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    f mcp_oauth_families%ROWTYPE;
BEGIN
    SELECT fam.* INTO f FROM mcp_oauth_families fam
    WHERE fam.family_id = (
        SELECT t.family_id FROM mcp_oauth_refresh_tokens t WHERE t.token_hash = p_presented
    )
    FOR UPDATE;
    IF NOT FOUND OR f.record IS NULL OR f.revoked_at IS NOT NULL OR f.expires_at <= p_now THEN
        RETURN QUERY SELECT 'invalid'::TEXT, NULL::TEXT, NULL::TEXT, NULL::BYTEA;
        RETURN;
    END IF;
    IF f.current_hash = p_presented THEN
        UPDATE mcp_oauth_families SET current_hash = p_successor, previous_hash = p_presented,
            previous_rotated_at = p_now, previous_sealed = p_sealed
        WHERE mcp_oauth_families.family_id = f.family_id;
        INSERT INTO mcp_oauth_refresh_tokens (token_hash, family_id)
        VALUES (p_successor, f.family_id);
        RETURN QUERY SELECT 'rotated'::TEXT, f.family_id, f.record, NULL::BYTEA;
        RETURN;
    END IF;
    IF f.previous_hash = p_presented AND f.previous_rotated_at IS NOT NULL
        AND p_now <= f.previous_rotated_at + p_grace THEN
        RETURN QUERY SELECT 'grace'::TEXT, f.family_id, f.record, f.previous_sealed;
        RETURN;
    END IF;
    UPDATE mcp_oauth_families SET revoked_at = p_now,
        keep_until = GREATEST(keep_until, p_now + p_revoked_keep)
    WHERE mcp_oauth_families.family_id = f.family_id;
    RETURN QUERY SELECT 'reused'::TEXT, f.family_id, f.record, NULL::BYTEA;
END
$$;

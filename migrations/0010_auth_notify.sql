-- Authentication without a database round trip: each node caches users and revoked tokens and
-- drops what changed when PostgreSQL tells it (`NOTIFY voidvm_auth`, sent at commit).
--
-- `token_generation` counts password changes: a token carries the generation it was issued in,
-- and one from an older generation is refused (a password change ends every earlier session;
-- `iat` has whole seconds only, too coarse to tell a token issued just before a change from one
-- issued just after).

ALTER TABLE users ADD COLUMN token_generation bigint NOT NULL DEFAULT 0;

CREATE FUNCTION voidvm_auth_user_changed() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('voidvm_auth', json_build_object(
            'kind', 'user',
            'id', CASE TG_OP WHEN 'DELETE' THEN OLD.id ELSE NEW.id END)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER users_notify_auth
    AFTER INSERT OR UPDATE OR DELETE
    ON users
    FOR EACH ROW
EXECUTE FUNCTION voidvm_auth_user_changed();

CREATE FUNCTION voidvm_auth_token_revoked() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('voidvm_auth', json_build_object(
            'kind', 'revoked',
            'jti', NEW.jti,
            'expiresAt', floor(extract(epoch FROM NEW.expires_at))::bigint)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER revoked_tokens_notify_auth
    AFTER INSERT
    ON revoked_tokens
    FOR EACH ROW
EXECUTE FUNCTION voidvm_auth_token_revoked();

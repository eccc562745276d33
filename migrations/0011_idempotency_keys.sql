-- Safe retries: the first answer to a request sent with an `Idempotency-Key` header, per user.
--
-- A row commits in the transaction that records the command's events (src/store/repository.rs),
-- so a key is taken exactly when its command took effect. A retry with the same key and the same
-- request (method, path and body, hashed into `request_hash`) within 24 hours is answered with
-- `status` and `body` again; one with another request is refused. Rows older than 24 hours are
-- no longer answered from and are deleted a few at a time by later inserts.

CREATE TABLE idempotency_keys (
    user_id      text        NOT NULL,
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,
    status       smallint    NOT NULL,
    body         jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

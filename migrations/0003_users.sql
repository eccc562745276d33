-- People who use the API. Passwords are argon2 PHC strings; `password_changed_at` tells whether
-- the first-start admin password is still the default.

CREATE TABLE users
(
    id                  text PRIMARY KEY,
    username            text        NOT NULL UNIQUE,
    password_hash       text        NOT NULL,
    role                text        NOT NULL CHECK (role IN ('admin', 'user')),
    password_changed_at timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

-- Tokens ended by logout before they expire (`jti`), kept until their own expiry.
CREATE TABLE revoked_tokens
(
    jti        text PRIMARY KEY,
    expires_at timestamptz NOT NULL
);

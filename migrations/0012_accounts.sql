-- Accounts for many people: roles with permissions, users with a status, quota and rate-limit
-- overrides, and the live part of the configuration. Each of these tables is a read model of the
-- event log (aggregate types `user`, `role` and `config`): a change commits its events and its row
-- together (`src/store/accounts.rs`). Password hashes are the one thing only here, never in the log.

CREATE TABLE roles
(
    id           text PRIMARY KEY,
    name         text        NOT NULL,
    description  text        NOT NULL DEFAULT '',
    -- Permission ids (`vm:start`), or `*` for every permission.
    permissions  text[]      NOT NULL,
    -- `own`: the VMs, jobs and events of the user's own VMs; `all`: everyone's.
    scope        text        NOT NULL CHECK (scope IN ('own', 'all')),
    -- Requests a minute for the role's users; NULL takes the configured default.
    rate_limit   integer CHECK (rate_limit > 0),
    built_in     boolean     NOT NULL DEFAULT false,
    -- The role stream's last sequence (its aggregate version).
    version      bigint      NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

INSERT INTO roles (id, name, description, permissions, scope, built_in)
VALUES ('admin', 'Administrator', 'Everything, on every VM and account.', ARRAY ['*'], 'all', true),
       ('user', 'User', 'Creates and runs their own VMs.',
        ARRAY ['vm:read', 'vm:create', 'vm:update', 'vm:delete', 'vm:start', 'vm:stop', 'vm:restart',
            'vm:pause', 'vm:resume', 'vm:reset', 'vm:console', 'job:read', 'job:cancel', 'event:read'],
        'own', true),
       ('viewer', 'Viewer', 'Reads every VM, job, event and the system figures; changes nothing.',
        ARRAY ['vm:read', 'job:read', 'event:read', 'system:read'], 'all', true);

ALTER TABLE users
    DROP CONSTRAINT users_role_check;
ALTER TABLE users
    ADD CONSTRAINT users_role_fkey FOREIGN KEY (role) REFERENCES roles (id);
ALTER TABLE users
    ADD COLUMN email      text,
    ADD COLUMN status     text   NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    -- Overrides of the configured quota: {"vms", "vcpus", "memory", "disk"}, each optional.
    ADD COLUMN quota      jsonb  NOT NULL DEFAULT '{}',
    -- Requests a minute for this user; NULL takes the role's, then the configured default.
    ADD COLUMN rate_limit integer CHECK (rate_limit > 0),
    ADD COLUMN version    bigint NOT NULL DEFAULT 0;

CREATE INDEX users_role ON users (role, created_at, id);

-- The configuration changed through `PUT /config`: only what was changed, over the server's own
-- settings. One row; `version` is the config stream's last sequence.
CREATE TABLE config
(
    id         integer PRIMARY KEY CHECK (id = 1),
    overrides  jsonb       NOT NULL,
    version    bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every node keeps roles and the configuration in memory: tell them when either changes (on the
-- channel the auth cache already listens on).
CREATE FUNCTION voidvm_auth_role_changed() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('voidvm_auth', json_build_object('kind', 'role')::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER roles_notify_auth
    AFTER INSERT OR UPDATE OR DELETE
    ON roles
    FOR EACH STATEMENT
EXECUTE FUNCTION voidvm_auth_role_changed();

CREATE FUNCTION voidvm_config_changed() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('voidvm_auth', json_build_object('kind', 'config')::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER config_notify_auth
    AFTER INSERT OR UPDATE OR DELETE
    ON config
    FOR EACH STATEMENT
EXECUTE FUNCTION voidvm_config_changed();

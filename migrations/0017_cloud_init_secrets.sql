-- The secret parts of a VM's cloud-init settings: its users' password hashes (SHA-512 crypt;
-- the plain text is never stored) and its user-data text. The event log records only that they
-- were set (`passwordSet`, `userDataSet` in `VmCreated`/`VmReconfigured` v3); the values live here,
-- written in the transaction of the command that set them (see `src/store/cloud_init.rs`), like
-- the webhooks' `secret` column. A row goes with its VM's deletion.
CREATE TABLE vm_cloud_init_secrets
(
    vm_id           text        PRIMARY KEY,
    password_hashes jsonb       NOT NULL DEFAULT '[]',
    user_data       text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

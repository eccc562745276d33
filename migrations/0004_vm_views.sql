-- The VM list the API reads, one row per VM, rebuilt from the event log: the VM actor writes it
-- after each commit, and start-up catches up any VM whose row is behind its stream (`version`).

CREATE TABLE vms
(
    id              text PRIMARY KEY,
    owner_id        text        NOT NULL,
    owner_name      text        NOT NULL,
    name            text        NOT NULL,
    status          text        NOT NULL,
    version         bigint      NOT NULL,
    state           jsonb       NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);

CREATE INDEX vms_owner ON vms (owner_id, created_at, id);
CREATE INDEX vms_status ON vms (status, created_at, id);
CREATE INDEX vms_created ON vms (created_at, id);

-- VM names are unique per owner among VMs that are not deleted. Names span aggregates, so they
-- are reserved here before the creating (or renaming) event commits, and released when a VM is
-- deleted. A reservation whose VM never got an event is removed at start-up.
CREATE TABLE vm_names
(
    owner_id    text        NOT NULL,
    name        text        NOT NULL,
    vm_id       text        NOT NULL,
    reserved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, name)
);

CREATE INDEX vm_names_vm ON vm_names (vm_id);

-- Host ports forwarded to VMs (user-mode NAT `hostfwd`). A host port serves one VM at a time, so
-- it is reserved here in the transaction that records the VM's network (`VmCreated`,
-- `VmReconfigured`) and released in the one that records its deletion (see
-- `src/store/ports.rs`): "one command, one transaction", as for `vm_names`. No VM had a network
-- before this migration, so there is nothing to fill in.
CREATE TABLE port_reservations
(
    protocol    text        NOT NULL CHECK (protocol IN ('tcp', 'udp')),
    host_port   integer     NOT NULL CHECK (host_port BETWEEN 1 AND 65535),
    vm_id       text        NOT NULL,
    reserved_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (protocol, host_port)
);

CREATE INDEX port_reservations_vm ON port_reservations (vm_id);

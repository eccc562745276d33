-- Jobs belong to a node, and a job waiting for a guest holds no worker (see `src/store/jobs.rs`).
--
-- A node claims a job under a lease (`lease_until`) that it renews while the job is running on
-- it. Only a job whose lease expired (its node is gone) goes back to the queue for another node;
-- a node shutting down hands back only its own.
--
-- A running job may wait for its guest (the ACPI power-off of a graceful stop or a restart): it
-- stays `running` on its node, but no worker holds it until `wake_at` (the next press of the
-- power button, or `deadline`, when the wait gives up and QEMU is told to quit). The exit of the
-- machine wakes it at once.

ALTER TABLE jobs
    ADD COLUMN node_id     text,
    ADD COLUMN lease_until timestamptz,
    ADD COLUMN wake_at     timestamptz,
    ADD COLUMN deadline    timestamptz;

CREATE INDEX jobs_running_leases ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX jobs_waiting ON jobs (node_id, wake_at) WHERE status = 'running' AND wake_at IS NOT NULL;

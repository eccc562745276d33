-- The event log's identity (see `src/bus/ownership.rs`).
--
-- One row, made once when the database is created. The NATS stream records the id of the log it
-- carries, so a relay can tell its own stream from another database's (same stream name, another
-- server) or from a stream that is ahead of its log (the database was restored from a backup, and
-- a backup keeps this id). It never changes: a copy of the database is the same log.

CREATE TABLE event_log_identity
(
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    log_id     uuid        NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO event_log_identity DEFAULT VALUES;

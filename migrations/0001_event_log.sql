-- The event log: postgres-es's `events` and `snapshots` layout, plus what an audit log needs.
-- Every change to a VM is a row here; everything else (jobs, the VM list) is derived from it.

CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        jsonb                        NOT NULL,
    -- Who acted, how, in which request, for which job: see `src/store/metadata.rs`.
    metadata       jsonb                        NOT NULL,
    -- The global order of the log (a cursor for readers), and when the row was written.
    position       bigint GENERATED ALWAYS AS IDENTITY,
    recorded_at    timestamptz                  NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_position ON events (position);

CREATE TABLE snapshots
(
    aggregate_type   text                                 NOT NULL,
    aggregate_id     text                                 NOT NULL,
    last_sequence    bigint CHECK (last_sequence >= 0)    NOT NULL,
    current_snapshot bigint CHECK (current_snapshot >= 0) NOT NULL,
    payload          jsonb                                NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, last_sequence)
);

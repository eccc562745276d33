-- Positions without a global commit lock, and one transaction per command.
--
-- 1. Positions. 0005 serialised every event insert behind one advisory lock so that positions
--    were handed out in commit order. That lock is gone. Instead an event's position is
--        (the inserting transaction's id, xid8) << 16  +  n
--    where n = 0, 1, 2... is the event's order within its transaction (at most 65,536 events per
--    transaction; more are refused). Position order is therefore (transaction id, n) order.
--
--    Transaction ids are handed out in increasing order, so a transaction that commits later
--    with a smaller position must have been in flight already. `voidvm_visible_bound()` is the
--    smallest id of the transactions of this database still in flight (or, when there are none,
--    the next id to be handed out), shifted like positions: no event can ever commit below it.
--    A reader computes it in one statement, then reads "positions after P and below the bound"
--    in a later one (whose snapshot sees every transaction that ended before the bound was
--    taken), so resuming after P never skips an event that commits later. Readers may lag behind
--    a transaction still in flight; writers never wait for each other. Transactions of other
--    databases on the same cluster do not hold readers back (unlike
--    `pg_snapshot_xmin(pg_current_snapshot())`, which counts every database).
--
--    Existing positions (1..N, from the identity column) stay as they are and stay below every new
--    one: the check at the end refuses to migrate a log where they would not.
--
--    Positions stay below 2^53 (exact in JSON and JavaScript) for the first 2^37 (about 1.4e11)
--    transaction ids of the cluster.
--
-- 2. One transaction per command (see `src/store/repository.rs`): the VM list, name reservations
--    and jobs commit with the events. The `cancelling` mark, which was written outside that
--    transaction, is gone: a job is cancelled by its `JobCancelled` event, which checks in the same
--    transaction that the job is still queued. A job left `cancelling` by the previous version
--    never had its event committed, so it is queued again.

DROP TRIGGER events_in_commit_order ON events;
DROP FUNCTION voidvm_events_in_commit_order();

ALTER TABLE events ALTER COLUMN position DROP IDENTITY;

CREATE FUNCTION voidvm_event_position() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    n bigint := COALESCE(NULLIF(current_setting('voidvm.events_in_transaction', true), ''), '0')::bigint;
BEGIN
    IF n > 65535 THEN
        RAISE EXCEPTION 'a transaction may record at most 65536 events'
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    -- Transaction-local: the count starts again at 0 in the next transaction.
    PERFORM set_config('voidvm.events_in_transaction', (n + 1)::text, true);
    NEW.position := (pg_current_xact_id()::text::bigint << 16) + n;
    RETURN NEW;
END
$$;

CREATE TRIGGER events_position
    BEFORE INSERT
    ON events
    FOR EACH ROW
EXECUTE FUNCTION voidvm_event_position();

-- The bound every reader of "events after position P" applies (see above and
-- `src/store/visible.rs`). `pg_stat_activity` shows each backend's transaction id as a 32-bit xid;
-- it is widened to xid8 against the next id (running ids are within 2^31 of it). A backend
-- that will get an id later gets one at or above the next id, so above the bound. Prepared
-- (two-phase) transactions have no backend and are counted from `pg_prepared_xacts`.
CREATE FUNCTION voidvm_visible_bound() RETURNS bigint
    LANGUAGE sql
    VOLATILE
AS
$$
WITH next AS (SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS id),
     running AS (SELECT a.backend_xid::text::bigint AS low FROM pg_stat_activity a
                 WHERE a.datname = current_database() AND a.backend_xid IS NOT NULL
                 UNION ALL
                 SELECT p.transaction::text::bigint FROM pg_prepared_xacts p
                 WHERE p.database = current_database())
SELECT LEAST(next.id,
             (SELECT min(CASE WHEN running.low <= (next.id & 4294967295)
                              THEN ((next.id >> 32) << 32) | running.low
                              ELSE (((next.id >> 32) - 1) << 32) | running.low END)
              FROM running)) << 16
FROM next
$$;

-- Jobs: no more `cancelling`.
UPDATE jobs
SET status     = 'queued',
    updated_at = now()
WHERE status = 'cancelling';
ALTER TABLE jobs
    DROP CONSTRAINT jobs_status_check;
ALTER TABLE jobs
    ADD CONSTRAINT jobs_status_check
        CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled'));

CREATE OR REPLACE FUNCTION voidvm_jobs_from_events() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    IF NEW.metadata ? 'job_kind' THEN
        INSERT INTO jobs (id, vm_id, kind, params, actor_id, created_at, updated_at)
        VALUES (NEW.metadata ->> 'job_id', NEW.aggregate_id, NEW.metadata ->> 'job_kind',
                NEW.payload, NEW.metadata ->> 'actor_id', NEW.recorded_at, NEW.recorded_at)
        ON CONFLICT (id) DO NOTHING;
        PERFORM pg_notify('voidvm_jobs', NEW.metadata ->> 'job_id');
    ELSIF NEW.metadata ? 'job_outcome' THEN
        UPDATE jobs
        SET status      = NEW.metadata ->> 'job_outcome',
            error       = NEW.metadata ->> 'job_error',
            finished_at = NEW.recorded_at,
            updated_at  = NEW.recorded_at
        WHERE id = NEW.metadata ->> 'job_id'
          AND status IN ('queued', 'running');
        PERFORM pg_notify('voidvm_job_done', NEW.metadata ->> 'job_id');
    END IF;
    RETURN NULL;
END
$$;

-- Name reservations are now taken and released in the command's transaction. Reservations left
-- by a crash of the previous version between reserving and committing are released once here
-- (as its start-up did), for VMs whose row is not behind their stream.
DELETE
FROM vm_names n
WHERE NOT EXISTS (SELECT 1
                  FROM vms v
                  WHERE v.id = n.vm_id
                    AND v.name = n.name
                    AND v.status <> 'deleted')
  AND NOT EXISTS (SELECT 1
                  FROM events e
                  WHERE e.aggregate_type = 'vm'
                    AND e.aggregate_id = n.vm_id
                    AND e.sequence > COALESCE((SELECT v.version FROM vms v WHERE v.id = n.vm_id), 0));

DO
$$
    BEGIN
        IF (SELECT COALESCE(max(position), 0) FROM events) >= (pg_current_xact_id()::text::bigint << 16) THEN
            RAISE EXCEPTION 'existing event positions reach the new ones; the log cannot be migrated';
        END IF;
    END
$$;

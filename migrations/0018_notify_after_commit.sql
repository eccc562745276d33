-- VM commands notify after they commit, not from the events' triggers (see `src/notifier.rs`).
--
-- PostgreSQL serialises the commits of all transactions that sent a notification: at commit,
-- such a transaction takes one lock for the whole cluster and holds it through its WAL flush.
-- The `NOTIFY` of the events' triggers was therefore a global commit lock on every command. The
-- node that commits a VM's events now notifies after the commit, in a statement of its own; the
-- triggers still notify for the other streams (users, roles, configuration, webhooks, images),
-- whose writes are rare and made inside their callers' transactions.

DROP TRIGGER events_notify_relay ON events;

CREATE TRIGGER events_notify_relay
    AFTER INSERT
    ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type <> 'vm')
EXECUTE FUNCTION voidvm_events_committed();

CREATE OR REPLACE FUNCTION voidvm_jobs_from_events() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    IF NEW.metadata ? 'job_kind' THEN
        INSERT INTO jobs (id, vm_id, stream_type, kind, params, actor_id, created_at, updated_at)
        VALUES (NEW.metadata ->> 'job_id', NEW.aggregate_id, NEW.aggregate_type,
                NEW.metadata ->> 'job_kind', NEW.payload, NEW.metadata ->> 'actor_id',
                NEW.recorded_at, NEW.recorded_at)
        ON CONFLICT (id) DO NOTHING;
        IF NEW.aggregate_type <> 'vm' THEN
            PERFORM pg_notify('voidvm_jobs', NEW.metadata ->> 'job_id');
        END IF;
    ELSIF NEW.metadata ? 'job_outcome' THEN
        UPDATE jobs
        SET status      = NEW.metadata ->> 'job_outcome',
            error       = NEW.metadata ->> 'job_error',
            finished_at = NEW.recorded_at,
            updated_at  = NEW.recorded_at
        WHERE id = NEW.metadata ->> 'job_id'
          AND status IN ('queued', 'running', 'cancelling');
        IF NEW.aggregate_type <> 'vm' THEN
            PERFORM pg_notify('voidvm_job_done', NEW.metadata ->> 'job_id');
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- Jobs: the work an accepted command asks for. A job row is never written by application code
-- on its own: the trigger below derives it from the event that opens it (metadata `job_kind`)
-- and closes it from the event that records its outcome (metadata `job_outcome`), inside the
-- same transaction as the event. So a job can never exist without its event, nor be lost after
-- its event committed, whatever crashes when.
--
-- Workers only move a job between `queued` and `running` (claiming, retrying, re-queueing after
-- a crash) and record attempts and timestamps.

CREATE TABLE jobs
(
    id          text PRIMARY KEY,
    vm_id       text        NOT NULL,
    kind        text        NOT NULL,
    status      text        NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'running', 'cancelling', 'succeeded', 'failed', 'cancelled')),
    -- The event that opened the job (its parameters, e.g. a stop's force and timeout).
    params      jsonb       NOT NULL,
    actor_id    text,
    attempt     integer     NOT NULL DEFAULT 0,
    run_after   timestamptz NOT NULL DEFAULT now(),
    last_error  text,
    error       text,
    claimed_by  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX jobs_claimable ON jobs (run_after) WHERE status = 'queued';
CREATE INDEX jobs_vm ON jobs (vm_id, created_at);
CREATE INDEX jobs_created ON jobs (created_at, id);

CREATE FUNCTION voidvm_jobs_from_events() RETURNS trigger
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
          AND status IN ('queued', 'running', 'cancelling');
        PERFORM pg_notify('voidvm_job_done', NEW.metadata ->> 'job_id');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER events_maintain_jobs
    AFTER INSERT
    ON events
    FOR EACH ROW
EXECUTE FUNCTION voidvm_jobs_from_events();

-- A VM's jobs are inserted by the statement that records the events opening them
-- (`src/store/record.rs`), no longer by the `jobs` trigger (0002, last changed in 0018). The
-- trigger now runs only for an event that closes a job, and for an image's event that opens one.
--
-- Every VM event goes through that one statement: a command's events, and the commands of other
-- VMs that queued up with it on the node (about 12 under load). The trigger was a PL/pgSQL call
-- for each of those events and, for one that opens a job, an `INSERT` of its own. Under 64
-- connections of starts (`benches/command_load.rs`, sampled with `perf`), PL/pgSQL was about a
-- quarter of PostgreSQL's time; a statement of 12 starts cost about 0.4 ms less with the jobs
-- inserted by the statement itself (one `INSERT` for all of them), and the events of a change,
-- which open and close no job, no longer call the function at all.
--
-- Closing stays with the trigger: its `UPDATE` of one job by its key always takes the key, where
-- an `UPDATE ... FROM unnest(...)` in the statement was planned, on a young `jobs` table, as a
-- scan of the whole table at every statement.
--
-- Nothing else changes: a job's row is written in the same statement as its event, so in the
-- same transaction, and says what the trigger wrote (the first event's payload as parameters,
-- the events' time as `created_at`). A job still cannot exist without its event, nor be lost
-- after its event committed. Every node sharing a database must run a version with this
-- migration: an older node's VM events would no longer open their jobs (README, "Jobs are never
-- lost").

DROP TRIGGER events_maintain_jobs ON events;

CREATE TRIGGER events_maintain_jobs
    AFTER INSERT
    ON events
    FOR EACH ROW
    WHEN ((NEW.metadata ? 'job_outcome' AND NOT NEW.metadata ? 'job_kind')
          OR (NEW.aggregate_type <> 'vm' AND NEW.metadata ? 'job_kind'))
EXECUTE FUNCTION voidvm_jobs_from_events();

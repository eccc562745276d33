-- A statement that is a whole transaction gives its events their positions itself
-- (`src/store/record.rs`); the position trigger (0007) now runs only for events inserted
-- without one.
--
-- An event's position stays what 0007 defined: the inserting transaction's id shifted left 16
-- bits, plus the event's order within its transaction. The node's grouped commits
-- (`src/store/record_batch.rs`) are one statement each, so the order within the transaction is
-- the event's order within the statement (`WITH ORDINALITY`, from 0), and the statement can
-- compute it without the trigger's transaction-local counter. That counter and the PL/pgSQL call
-- per event were the rest of PL/pgSQL's time under command load (about 2% of the machine, with
-- `perf`). A statement that shares its transaction with other writes of events (a command with a
-- name or an idempotency key to take, an image's events) still leaves positions to the trigger,
-- so the counter stays exact there. The readers' bound (0019) is unchanged: a position is still
-- below the next transaction id's.

DROP TRIGGER events_position ON events;

CREATE TRIGGER events_position
    BEFORE INSERT
    ON events
    FOR EACH ROW
    WHEN (NEW.position IS NULL)
EXECUTE FUNCTION voidvm_event_position();

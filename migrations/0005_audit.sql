-- The audit log's guarantees and indexes.
--
-- Positions in commit order: every statement that inserts events first takes one transaction-level
-- advisory lock, held until commit, and it takes it before the row's position is drawn. So a
-- transaction that draws a smaller position always commits before one that draws a larger one,
-- and a reader that has seen position P will never later find a committed event below P. That is
-- what lets `GET /events?after=P` page by position without skipping anything, however many
-- writers run at once. The price is that event commits are serialised; they are small and rare
-- next to the work they describe.

CREATE FUNCTION voidvm_events_in_commit_order() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    -- 0x766f6964766d = 'voidvm'
    PERFORM pg_advisory_xact_lock(130307733468525);
    RETURN NULL;
END
$$;

CREATE TRIGGER events_in_commit_order
    BEFORE INSERT
    ON events
    FOR EACH STATEMENT
EXECUTE FUNCTION voidvm_events_in_commit_order();

-- One index per filter of GET /events, each ending in position for keyset paging.
CREATE INDEX events_stream_position ON events (aggregate_id, position);
CREATE INDEX events_type_position ON events (event_type, position);
CREATE INDEX events_actor_id_position ON events ((metadata ->> 'actor_id'), position);
CREATE INDEX events_actor_name_position ON events ((metadata ->> 'actor_name'), position);
CREATE INDEX events_job_position ON events ((metadata ->> 'job_id'), position);
CREATE INDEX events_recorded_position ON events (recorded_at, position);

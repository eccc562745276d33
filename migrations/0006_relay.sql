-- The relay from the event log to NATS (see `src/bus/relay.rs`).
--
-- The relay publishes events in position order and records here the last position NATS
-- confirmed. After a crash, or while NATS was away, it resumes from that position; JetStream
-- drops the re-sent duplicates by message id. Positions are handed out in commit order
-- (0005), so "everything after the confirmed position" never misses a late commit.

CREATE TABLE relay_offsets
(
    name       text PRIMARY KEY,
    position   bigint      NOT NULL CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Wakes the relay (of whichever node holds the relay lock) as soon as events commit; the
-- notification is delivered at commit, never before.
CREATE FUNCTION voidvm_events_committed() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify('voidvm_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify_relay
    AFTER INSERT
    ON events
    FOR EACH STATEMENT
EXECUTE FUNCTION voidvm_events_committed();

-- The feed's filter for users: events of the VMs they own, recorded in the event's metadata.
CREATE INDEX events_owner_position ON events ((metadata ->> 'owner_id'), position);

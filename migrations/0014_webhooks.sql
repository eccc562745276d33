-- Webhooks: the event log delivered to HTTP receivers (see `src/webhooks/`).
--
-- `webhooks` is the read model of the `webhook` streams in the event log (`WebhookCreated`,
-- `WebhookChanged`, `WebhookDeleted`): a change commits its event and its row together. The
-- signing secret lives only here, never in the log.
--
-- `webhook_deliveries` is each webhook's outbox. The dispatcher reads the log after a webhook's
-- `cursor` (below the visible bound, so it never skips a late commit), inserts one delivery per
-- matching event and moves the cursor, in one transaction; then it sends each VM's deliveries in
-- position order, retrying with backoff. A crash at any point leaves either the cursor and its
-- deliveries, or neither: nothing is lost, and at worst an attempt in flight is sent again.

CREATE TABLE webhooks
(
    id         text PRIMARY KEY,
    owner_id   text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    url        text        NOT NULL,
    -- VM event types (`VmStarted`), or `*` for every one.
    events     text[]      NOT NULL,
    secret     text        NOT NULL,
    active     boolean     NOT NULL,
    -- Every event at or below this position has its delivery row (or did not match).
    cursor     bigint      NOT NULL CHECK (cursor >= 0),
    -- The webhook stream's last sequence (its aggregate version).
    version    bigint      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX webhooks_owner ON webhooks (owner_id, created_at, id);

CREATE TABLE webhook_deliveries
(
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id       text        NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    -- The event delivered (its global position) and its VM: deliveries of one VM go in order.
    position         bigint      NOT NULL,
    vm_id            text        NOT NULL,
    event_type       text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- The last attempt: the receiver's HTTP status, or why there was none.
    response_status  integer,
    last_error       text,
    duration_ms      integer,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_attempt_at  timestamptz,
    delivered_at     timestamptz,
    UNIQUE (webhook_id, position)
);

-- The dispatcher's question: each (webhook, VM)'s oldest delivery still to send.
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, vm_id, position)
    WHERE status = 'pending';
-- `GET /webhooks/{id}/deliveries`, newest first.
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id DESC);

-- The built-in `user` role manages its own webhooks.
UPDATE roles
SET permissions = permissions || ARRAY ['webhook:read', 'webhook:create', 'webhook:update', 'webhook:delete'],
    updated_at  = now()
WHERE id = 'user';

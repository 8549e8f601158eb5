-- Events to publish at a given time (`deliverAt`). A row is committed before its 202, moved
-- to the outbox when due (`released`), marked `published` when the relay's publish is
-- confirmed, or `cancelled` before it is due. Settled rows are dropped after
-- IDEMPOTENCY_TTL.
CREATE TABLE scheduled_events (
    seq            bigserial PRIMARY KEY,
    event_id       uuid        NOT NULL UNIQUE,
    deliver_at     timestamptz NOT NULL,
    state          text        NOT NULL DEFAULT 'scheduled'
                   CHECK (state IN ('scheduled', 'released', 'published', 'cancelled')),
    type           text        NOT NULL,
    user_id        text,
    ordering_key   text        NOT NULL,
    correlation_id text        NOT NULL,
    -- The principal that scheduled it: it (or an admin) may cancel it.
    source         text        NOT NULL,
    timestamp_secs bigint      NOT NULL,
    body           bytea       NOT NULL,
    critical       boolean     NOT NULL,
    traceparent    text,
    tracestate     text,
    accepted_at    timestamptz NOT NULL,
    settled_at     timestamptz
);

-- The release claim reads due rows in time order and nothing else: with a million pending,
-- it stops at the first row not yet due.
CREATE INDEX scheduled_events_due ON scheduled_events (deliver_at, seq) WHERE state = 'scheduled';
CREATE INDEX scheduled_events_by_user ON scheduled_events (user_id, accepted_at DESC, event_id DESC)
    WHERE state = 'scheduled';
CREATE INDEX scheduled_events_settled ON scheduled_events (settled_at) WHERE state <> 'scheduled';

-- Outbox rows released by the schedule: owed to the broker, but not a backlog that new
-- events must queue behind (a scheduled event does not hold back its user's other events).
ALTER TABLE outbox ADD COLUMN scheduled boolean NOT NULL DEFAULT false;

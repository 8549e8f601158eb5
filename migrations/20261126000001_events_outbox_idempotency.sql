-- Critical events, kept with their delivery state.
CREATE TABLE events (
    id             uuid PRIMARY KEY,
    type           text        NOT NULL,
    user_id        text,
    correlation_id text        NOT NULL,
    source         text        NOT NULL,
    envelope       jsonb       NOT NULL,
    state          text        NOT NULL DEFAULT 'accepted' CHECK (state IN ('accepted', 'published')),
    accepted_at    timestamptz NOT NULL,
    published_at   timestamptz
);

-- A user's events, newest first, with a stable tiebreak for cursors.
CREATE INDEX events_by_user ON events (user_id, accepted_at DESC, id DESC);

-- Messages owed to the broker: every critical event until confirmed, and any event that
-- could not be confirmed while the broker was unreachable.
CREATE TABLE outbox (
    seq             bigserial PRIMARY KEY,
    event_id        uuid        NOT NULL UNIQUE,
    routing_key     text        NOT NULL,
    -- Events of one ordering key (the user, else the event itself) leave in seq order.
    ordering_key    text        NOT NULL,
    correlation_id  text        NOT NULL,
    timestamp_secs  bigint      NOT NULL,
    body            bytea       NOT NULL,
    critical        boolean     NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text
);

CREATE INDEX outbox_due ON outbox (next_attempt_at, seq);
CREATE INDEX outbox_by_ordering_key ON outbox (ordering_key, seq);

-- The first answer to a request with an Idempotency-Key (or a client-chosen event id).
CREATE TABLE idempotency_keys (
    principal    text        NOT NULL,
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,
    status       smallint,
    response     jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (principal, key)
);

CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);

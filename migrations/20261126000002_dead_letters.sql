-- Messages the consumers gave up on, with why; replayed ones keep their replay time.
CREATE TABLE dead_letters (
    id          uuid PRIMARY KEY,
    event_id    text,
    routing_key text        NOT NULL,
    queue       text        NOT NULL,
    attempts    integer     NOT NULL,
    last_error  text        NOT NULL,
    body        bytea       NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);

CREATE INDEX dead_letters_newest ON dead_letters (failed_at DESC, id DESC);

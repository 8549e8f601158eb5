-- The W3C trace context an event was accepted in, so the relay and a replay publish it
-- with the same `traceparent` (and `tracestate`) as the request would have.
ALTER TABLE outbox ADD COLUMN traceparent text, ADD COLUMN tracestate text;
ALTER TABLE dead_letters ADD COLUMN traceparent text, ADD COLUMN tracestate text;

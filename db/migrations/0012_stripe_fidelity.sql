-- Stripe as it really behaves (issue 18).

-- Every parameter of a meter event is fixed when its outbox entry is sealed: a retry must send
-- exactly the same request, or Stripe answers the reused idempotency key with a 400
-- idempotency_error. `event_timestamp` (Unix seconds) is the timestamp sent; it equals
-- window_start unless the window was older than Stripe accepts (35 days) when sealed, or the
-- entry is `late` (its billing period's invoice was already final before its first try, so it
-- was placed in the open period; window_start keeps its original window).
ALTER TABLE billing_outbox
    ADD COLUMN event_timestamp bigint,
    ADD COLUMN late            boolean     NOT NULL DEFAULT false,
    ADD COLUMN last_attempt_at timestamptz;  -- when the relay last called the sink for it

UPDATE billing_outbox
SET event_timestamp = extract(epoch FROM greatest(window_start, now() - interval '35 days' + interval '1 hour'))::bigint;

ALTER TABLE billing_outbox ALTER COLUMN event_timestamp SET NOT NULL;

-- Reconciliation and late-usage listings read by the hour Stripe files an event under.
CREATE INDEX billing_outbox_event_time_idx ON billing_outbox (customer_id, meter, event_timestamp);
CREATE INDEX billing_outbox_late_idx ON billing_outbox (window_start) WHERE late;

-- The last subscription state applied from a webhook, per subscription: Stripe delivers events
-- at least once and in no guaranteed order, so an event older than the one applied is ignored.
CREATE TABLE stripe_subscriptions (
    subscription_id text        PRIMARY KEY,
    customer_id     text        NOT NULL,
    status          text        NOT NULL,
    event_created   bigint      NOT NULL,  -- the applied event's `created` (Unix seconds)
    event_id        text        NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

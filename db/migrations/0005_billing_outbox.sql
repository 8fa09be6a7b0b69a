-- Metered billing: usage accrues per tenant and time window in the same transaction that stores
-- the usage rows; the relay seals closed windows into immutable outbox entries (one per meter,
-- with a deterministic identifier) and posts them to the billing sink (Stripe by default).

-- Per-tenant price multiplier (markup) for resellers, applied to the billed amount.
ALTER TABLE tenants ADD COLUMN price_multiplier numeric(12, 6) NOT NULL DEFAULT 1
    CHECK (price_multiplier > 0);

-- Running totals per tenant and window. `sealed_*` is what outbox entries already cover: a row
-- arriving late (a spill file replayed after the window was reported) makes the totals move
-- past the sealed values, and the next seal reports only the difference.
CREATE TABLE billing_accrual (
    tenant_id            text           NOT NULL,
    window_start         timestamptz    NOT NULL,
    cost_usd             numeric(24, 10) NOT NULL DEFAULT 0,
    input_tokens         bigint         NOT NULL DEFAULT 0,
    output_tokens        bigint         NOT NULL DEFAULT 0,
    sealed_cost_usd      numeric(24, 10) NOT NULL DEFAULT 0,
    sealed_input_tokens  bigint         NOT NULL DEFAULT 0,
    sealed_output_tokens bigint         NOT NULL DEFAULT 0,
    seals                integer        NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, window_start)
);

CREATE INDEX billing_accrual_unsealed_idx ON billing_accrual (window_start)
    WHERE cost_usd <> sealed_cost_usd
       OR input_tokens <> sealed_input_tokens
       OR output_tokens <> sealed_output_tokens;

-- Rounding carry per tenant and meter: `accrued` is the exact amount in meter units (e.g.
-- micro-dollars × multiplier) sealed so far, `reported` the integer units put in entries.
-- Each seal reports floor(accrued) - reported, so the reported sum never drifts from the
-- database sum by a unit or more.
CREATE TABLE billing_carry (
    tenant_id text           NOT NULL,
    meter     text           NOT NULL,
    accrued   numeric(32, 10) NOT NULL DEFAULT 0,
    reported  bigint         NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, meter)
);

CREATE TABLE billing_outbox (
    id              bigserial      PRIMARY KEY,
    identifier      text           NOT NULL UNIQUE,  -- Stripe identifier and idempotency key
    kind            text           NOT NULL DEFAULT 'usage' CHECK (kind IN ('usage', 'fix')),
    tenant_id       text           NOT NULL,
    customer_id     text           NOT NULL,
    meter           text           NOT NULL,  -- the meter's event name
    window_start    timestamptz    NOT NULL,  -- the event's timestamp
    value           bigint         NOT NULL CHECK (value > 0),
    status          text           NOT NULL DEFAULT 'pending'
                                   CHECK (status IN ('pending', 'sent', 'failed', 'reconcile',
                                                     'reconciled', 'cancelled')),
    attempts        integer        NOT NULL DEFAULT 0,
    next_attempt_at timestamptz    NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz    NOT NULL DEFAULT now(),
    sent_at         timestamptz
);

CREATE INDEX billing_outbox_due_idx ON billing_outbox (customer_id, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX billing_outbox_customer_time_idx ON billing_outbox (customer_id, meter, window_start);

-- Stripe webhook deliveries already handled (Stripe delivers at least once).
CREATE TABLE stripe_webhook_events (
    event_id    text        PRIMARY KEY,
    type        text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

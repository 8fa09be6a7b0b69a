-- The usage ledger: one row per request, partitioned by month, plus a daily rollup
-- maintained in the same transaction as the inserts.

CREATE TABLE litellm_usage (
    request_id        text           NOT NULL,
    tenant_id         text           NOT NULL,
    api_key_id        text,
    model             text           NOT NULL,
    model_group       text,
    provider          text,
    call_type         text,
    prompt_tokens     integer        NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens integer        NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    cached_tokens     integer        NOT NULL DEFAULT 0 CHECK (cached_tokens >= 0),
    reasoning_tokens  integer        NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= 0),
    total_tokens      integer        NOT NULL DEFAULT 0 CHECK (total_tokens >= 0),
    cost_usd          numeric(20, 10) NOT NULL DEFAULT 0 CHECK (cost_usd >= 0),
    latency_ms        integer,
    status            text           NOT NULL CHECK (status IN ('success', 'failure', 'rejected')),
    http_status       smallint,
    error_type        text,
    stream            boolean        NOT NULL DEFAULT false,
    cache_hit         boolean        NOT NULL DEFAULT false,
    customer_id       text,
    trace_id          text,
    start_time        timestamptz    NOT NULL,
    end_time          timestamptz,
    inserted_at       timestamptz    NOT NULL DEFAULT now(),
    -- A partitioned table's unique key must contain the partition key. start_time is part
    -- of the record itself, so a replayed record always carries the same pair.
    PRIMARY KEY (request_id, start_time)
) PARTITION BY RANGE (start_time);

CREATE INDEX litellm_usage_tenant_time_idx ON litellm_usage (tenant_id, start_time);
CREATE INDEX litellm_usage_customer_time_idx ON litellm_usage (customer_id, start_time)
    WHERE customer_id IS NOT NULL;

-- Creates the month partition holding `ts` if it does not exist yet; returns its name.
CREATE FUNCTION billingproxy_ensure_usage_partition(ts timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    part_name   text := 'litellm_usage_' || to_char(month_start AT TIME ZONE 'UTC', 'YYYY_MM');
BEGIN
    IF to_regclass(part_name) IS NULL THEN
        -- Serialise concurrent creators (several proxy instances) on one lock.
        PERFORM pg_advisory_xact_lock(hashtext(part_name));
        IF to_regclass(part_name) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF litellm_usage FOR VALUES FROM (%L) TO (%L)',
                part_name, month_start, month_start + interval '1 month');
        END IF;
    END IF;
    RETURN part_name;
END;
$$;

CREATE TABLE usage_daily (
    day               date           NOT NULL,
    tenant_id         text           NOT NULL,
    model             text           NOT NULL,
    requests          bigint         NOT NULL DEFAULT 0,
    failures          bigint         NOT NULL DEFAULT 0,
    rejected          bigint         NOT NULL DEFAULT 0,
    prompt_tokens     bigint         NOT NULL DEFAULT 0,
    completion_tokens bigint         NOT NULL DEFAULT 0,
    cached_tokens     bigint         NOT NULL DEFAULT 0,
    total_tokens      bigint         NOT NULL DEFAULT 0,
    cost_usd          numeric(24, 10) NOT NULL DEFAULT 0,
    PRIMARY KEY (day, tenant_id, model)
);

CREATE INDEX usage_daily_tenant_idx ON usage_daily (tenant_id, day);

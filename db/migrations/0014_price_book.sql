-- The price book: dated price versions per model (USD per million tokens, exact NUMERIC), per
-- tenant rate cards, the version each usage row was billed at, and the re-rating audit log.
-- Versions are never updated or deleted: a change is a new version with a later effective_from.

CREATE TABLE price_versions (
    id                      bigserial      PRIMARY KEY,
    model                   text           NOT NULL CHECK (model <> ''),
    effective_from          timestamptz    NOT NULL,
    input_per_mtok          numeric(20, 10) NOT NULL CHECK (input_per_mtok >= 0),
    output_per_mtok         numeric(20, 10) NOT NULL CHECK (output_per_mtok >= 0),
    cached_read_per_mtok    numeric(20, 10) NOT NULL CHECK (cached_read_per_mtok >= 0),
    cache_write_5m_per_mtok numeric(20, 10) NOT NULL CHECK (cache_write_5m_per_mtok >= 0),
    cache_write_1h_per_mtok numeric(20, 10) NOT NULL CHECK (cache_write_1h_per_mtok >= 0),
    -- Reasoning tokens are part of the completion; NULL bills them at the output price.
    reasoning_per_mtok      numeric(20, 10) CHECK (reasoning_per_mtok >= 0),
    -- Above long_context_threshold prompt tokens, the whole request is billed at the long tier
    -- (input-side dimensions scaled by long_input / input, as providers price them).
    long_context_threshold  integer        CHECK (long_context_threshold > 0),
    long_input_per_mtok     numeric(20, 10) CHECK (long_input_per_mtok >= 0),
    long_output_per_mtok    numeric(20, 10) CHECK (long_output_per_mtok >= 0),
    mode                    text           NOT NULL DEFAULT 'chat',  -- chat | embedding | … (informative)
    source                  text           NOT NULL CHECK (source IN ('config', 'cli', 'api')),
    created_by              text           NOT NULL,
    reason                  text,
    created_at              timestamptz    NOT NULL DEFAULT now(),
    UNIQUE (model, effective_from),
    CHECK ((long_context_threshold IS NULL) = (long_input_per_mtok IS NULL)
           AND (long_input_per_mtok IS NULL) = (long_output_per_mtok IS NULL))
);

-- Rate cards: a tenant's negotiated prices for one model (or all, model NULL) over
-- [valid_from, valid_until): either a multiplier of the list price or fixed prices per
-- dimension (an unset dimension keeps the list price).
CREATE TABLE rate_cards (
    id                      bigserial      PRIMARY KEY,
    tenant_id               text           NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    model                   text,
    multiplier              numeric(12, 6) CHECK (multiplier > 0),
    input_per_mtok          numeric(20, 10) CHECK (input_per_mtok >= 0),
    output_per_mtok         numeric(20, 10) CHECK (output_per_mtok >= 0),
    cached_read_per_mtok    numeric(20, 10) CHECK (cached_read_per_mtok >= 0),
    cache_write_5m_per_mtok numeric(20, 10) CHECK (cache_write_5m_per_mtok >= 0),
    cache_write_1h_per_mtok numeric(20, 10) CHECK (cache_write_1h_per_mtok >= 0),
    valid_from              timestamptz    NOT NULL,
    valid_until             timestamptz,
    created_by              text           NOT NULL,
    reason                  text,
    created_at              timestamptz    NOT NULL DEFAULT now(),
    CHECK (valid_until IS NULL OR valid_until > valid_from),
    CHECK ((multiplier IS NOT NULL) <> (COALESCE(input_per_mtok, output_per_mtok, cached_read_per_mtok,
                                                 cache_write_5m_per_mtok, cache_write_1h_per_mtok) IS NOT NULL))
);
CREATE INDEX rate_cards_tenant_idx ON rate_cards (tenant_id, valid_from);

-- The single per-tenant markup becomes an open-ended all-models rate card; the column stays
-- (older code reads it) at 1, and nothing applies it any more.
INSERT INTO rate_cards (tenant_id, model, multiplier, valid_from, created_by, reason)
SELECT id, NULL, price_multiplier, '1970-01-01 00:00:00+00', 'migration 0014', 'from tenants.price_multiplier'
FROM tenants WHERE price_multiplier <> 1;
UPDATE tenants SET price_multiplier = 1 WHERE price_multiplier <> 1;  -- now in the rate card, nowhere else

-- Re-rating runs: one audit entry per applied run.
CREATE TABLE rerate_runs (
    id             bigserial      PRIMARY KEY,
    tenant_id      text           NOT NULL,
    period_from    timestamptz    NOT NULL,
    period_to      timestamptz    NOT NULL,
    rows_changed   integer        NOT NULL,
    difference_usd numeric(24, 10) NOT NULL,
    created_by     text           NOT NULL,
    created_at     timestamptz    NOT NULL DEFAULT now()
);

-- The version a row was billed at, and the cache-write tokens it was billed for (part of
-- prompt_tokens), so a re-rate reproduces every dimension.
ALTER TABLE litellm_usage ADD COLUMN price_version_id bigint,
    ADD COLUMN cache_write_5m_tokens integer NOT NULL DEFAULT 0 CHECK (cache_write_5m_tokens >= 0),
    ADD COLUMN cache_write_1h_tokens integer NOT NULL DEFAULT 0 CHECK (cache_write_1h_tokens >= 0);

-- Every proxy instance LISTENs here and reloads its in-memory schedule (a poll is the fallback).
CREATE FUNCTION billingproxy_notify_prices() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('billingproxy_prices', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;
CREATE TRIGGER price_versions_notify AFTER INSERT OR UPDATE OR DELETE ON price_versions
    FOR EACH STATEMENT EXECUTE FUNCTION billingproxy_notify_prices();
CREATE TRIGGER rate_cards_notify AFTER INSERT OR UPDATE OR DELETE ON rate_cards
    FOR EACH STATEMENT EXECUTE FUNCTION billingproxy_notify_prices();

-- Tenants and their gateway keys. Keys are stored only as SHA-256 hashes.

CREATE TABLE tenants (
    id                 text        PRIMARY KEY,
    name               text        NOT NULL UNIQUE,
    status             text        NOT NULL DEFAULT 'active'
                                   CHECK (status IN ('active', 'suspended')),
    stripe_customer_id text        UNIQUE,
    allowed_models     text[]      NOT NULL DEFAULT '{}',  -- empty: every configured model
    rpm_limit          integer     CHECK (rpm_limit > 0),
    tpm_limit          integer     CHECK (tpm_limit > 0),
    budget_usd         numeric(20, 6) CHECK (budget_usd >= 0),  -- NULL: no budget
    budget_period      text        NOT NULL DEFAULT 'monthly'
                                   CHECK (budget_period IN ('monthly', 'daily', 'total')),
    metadata           jsonb       NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          text        PRIMARY KEY,
    tenant_id   text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash    text        NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    key_prefix  text        NOT NULL,
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

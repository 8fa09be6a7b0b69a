-- Budgets and limits below the tenant (issue 19): per key, per end user, and the channel that
-- tells every proxy instance that a tenant, key or end-user budget changed.

-- A key's own budget and rate limits, checked in addition to its tenant's.
ALTER TABLE api_keys
    ADD COLUMN budget_usd    numeric(20, 6) CHECK (budget_usd >= 0),  -- NULL: no key budget
    ADD COLUMN budget_period text NOT NULL DEFAULT 'monthly'
                             CHECK (budget_period IN ('monthly', 'daily', 'total')),
    ADD COLUMN rpm_limit     integer CHECK (rpm_limit > 0),
    ADD COLUMN tpm_limit     integer CHECK (tpm_limit > 0),
    -- per model, for this key: {"gpt-4o": {"rpm": 10, "tpm": 5000}} (LiteLLM's model_rpm/tpm_limit)
    ADD COLUMN model_limits  jsonb NOT NULL DEFAULT '{}';

-- The budget every end user of the tenant gets unless end_user_budgets says otherwise.
ALTER TABLE tenants
    ADD COLUMN end_user_budget_usd    numeric(20, 6) CHECK (end_user_budget_usd >= 0),  -- NULL: none
    ADD COLUMN end_user_budget_period text NOT NULL DEFAULT 'daily'
                                      CHECK (end_user_budget_period IN ('monthly', 'daily', 'total'));

-- Per-end-user overrides of the tenant's default (end_user as attribution validates it).
CREATE TABLE end_user_budgets (
    tenant_id     text           NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    end_user      text           NOT NULL,
    budget_usd    numeric(20, 6) CHECK (budget_usd >= 0),  -- NULL: this end user has no budget
    budget_period text           CHECK (budget_period IN ('monthly', 'daily', 'total')),  -- NULL: the tenant's
    updated_at    timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, end_user)
);

-- budget_spend / budget_leases (0004) keep their column name tenant_id, which now holds the
-- budget's scope: a tenant id (tn_…) for the tenant level, 'key:<tenant>:<key id>' or
-- 'end_user:<tenant>:<end user>' below it. Neither table has a foreign key to tenants.
COMMENT ON COLUMN budget_spend.tenant_id IS 'budget scope: tn_… | key:<tenant>:<key> | end_user:<tenant>:<end user>';
COMMENT ON COLUMN budget_leases.tenant_id IS 'budget scope: tn_… | key:<tenant>:<key> | end_user:<tenant>:<end user>';

-- Every change to what the auth cache holds is announced on one channel with the tenant id as
-- payload; each proxy instance LISTENs and drops that tenant's cached keys (billingproxy/access/follow.py).
-- A trigger, not the writers: psql and the webhook's status changes are covered too.
CREATE FUNCTION billingproxy_notify_auth() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed record := CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
BEGIN
    IF TG_TABLE_NAME = 'tenants' THEN
        PERFORM pg_notify('billingproxy_auth', changed.id);
    ELSE
        PERFORM pg_notify('billingproxy_auth', changed.tenant_id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tenants_notify_auth AFTER UPDATE OR DELETE ON tenants
    FOR EACH ROW EXECUTE FUNCTION billingproxy_notify_auth();
CREATE TRIGGER api_keys_notify_auth AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION billingproxy_notify_auth();
CREATE TRIGGER end_user_budgets_notify_auth AFTER INSERT OR UPDATE OR DELETE ON end_user_budgets
    FOR EACH ROW EXECUTE FUNCTION billingproxy_notify_auth();

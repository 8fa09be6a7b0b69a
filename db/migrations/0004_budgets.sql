-- Budgets shared by every proxy instance.
-- budget_spend: settled spend per tenant and budget period (reported by the instances as
--   requests finish); readers take GREATEST(spent, the usage rollup) so spend survives a lost
--   report or a restart.
-- budget_leases: the slice of a tenant's remaining budget each instance holds; an instance
--   reserves from its slice locally and returns here only when it runs out. A lease that is not
--   renewed expires, so a dead instance's slice flows back.

CREATE TABLE budget_spend (
    tenant_id      text           NOT NULL,
    period_start   timestamptz    NOT NULL,
    spent          numeric(24, 10) NOT NULL DEFAULT 0 CHECK (spent >= 0),
    last_threshold integer        NOT NULL DEFAULT 0,  -- highest alert threshold (%) already announced
    updated_at     timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, period_start)
);

CREATE TABLE budget_leases (
    tenant_id    text           NOT NULL,
    period_start timestamptz    NOT NULL,
    holder       text           NOT NULL,
    amount       numeric(24, 10) NOT NULL CHECK (amount >= 0),
    expires_at   timestamptz    NOT NULL,
    PRIMARY KEY (tenant_id, period_start, holder)
);

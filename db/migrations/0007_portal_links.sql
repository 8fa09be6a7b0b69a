-- Tenant portal links (the console's own table): a read-only link to one tenant's usage and bill.
-- Only the SHA-256 of the link's token is stored (like api_keys); links expire and can be revoked.

CREATE TABLE portal_links (
    id          text        PRIMARY KEY,
    tenant_id   text        NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    token_hash  text        NOT NULL UNIQUE CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    created_by  text        NOT NULL DEFAULT 'operator'
);

CREATE INDEX portal_links_tenant_idx ON portal_links (tenant_id, created_at);

-- The console's billing-health page reads what is NOT yet sent (pending, failed, in doubt, …)
-- and the correction entries, per tenant. Both are small sets in a large outbox (almost every
-- entry ends up 'sent'), so two partial indexes keep the page fast without scanning the outbox.
-- Sent totals come from billing_carry (units put into entries) minus these.
CREATE INDEX billing_outbox_unsent_idx ON billing_outbox (tenant_id, meter) INCLUDE (value, status, kind)
    WHERE status <> 'sent';
CREATE INDEX billing_outbox_fix_idx ON billing_outbox (tenant_id, meter) INCLUDE (value, status, kind)
    WHERE kind = 'fix';

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

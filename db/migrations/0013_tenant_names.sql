-- Tenant names are unique case-insensitively: "ACME" and "acme" are one tenant, found by either
-- spelling (TenantStore.get_tenant). Fails, naming the duplicates, if two names differ only in case.
CREATE UNIQUE INDEX tenants_name_lower_idx ON tenants (lower(name));

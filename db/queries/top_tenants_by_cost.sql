-- The tenants that cost the most in [from, to).
--   psql "$DATABASE_URL" -v from=2026-11-01 -v to=2026-12-01 -v limit=10 -f db/queries/top_tenants_by_cost.sql
-- Params: from, to (timestamptz), limit (integer)
SELECT u.tenant_id,
       t.name              AS tenant_name,
       count(*)            AS requests,
       sum(u.total_tokens) AS total_tokens,
       sum(u.cost_usd)     AS cost_usd
FROM litellm_usage u
LEFT JOIN tenants t ON t.id = u.tenant_id
WHERE u.start_time >= :'from' AND u.start_time < :'to'
GROUP BY 1, 2
ORDER BY cost_usd DESC, u.tenant_id
LIMIT :'limit';

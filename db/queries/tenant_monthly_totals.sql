-- Per-tenant monthly totals (UTC calendar months), for [from, to).
--   psql "$DATABASE_URL" -v from=2026-01-01 -v to=2027-01-01 -f db/queries/tenant_monthly_totals.sql
-- Params: from, to (timestamptz)
SELECT u.tenant_id,
       t.name                                            AS tenant_name,
       date_trunc('month', u.start_time AT TIME ZONE 'UTC')::date AS month,
       count(*)                                          AS requests,
       count(*) FILTER (WHERE u.status = 'failure')      AS failures,
       sum(u.prompt_tokens)                              AS prompt_tokens,
       sum(u.completion_tokens)                          AS completion_tokens,
       sum(u.total_tokens)                               AS total_tokens,
       sum(u.cost_usd)                                   AS cost_usd
FROM litellm_usage u
LEFT JOIN tenants t ON t.id = u.tenant_id
WHERE u.start_time >= :'from' AND u.start_time < :'to'
GROUP BY 1, 2, 3
ORDER BY 3, 1;

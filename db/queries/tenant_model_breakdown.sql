-- One tenant's usage per model for an invoice period [from, to).
--   psql "$DATABASE_URL" -v tenant_id=tn_… -v from=2026-11-01 -v to=2026-12-01 -f db/queries/tenant_model_breakdown.sql
-- Params: tenant_id (text), from, to (timestamptz)
SELECT model,
       count(*)                                       AS requests,
       count(*) FILTER (WHERE status = 'success')     AS successes,
       count(*) FILTER (WHERE status = 'failure')     AS failures,
       sum(prompt_tokens)                             AS prompt_tokens,
       sum(cached_tokens)                             AS cached_tokens,
       sum(completion_tokens)                         AS completion_tokens,
       sum(total_tokens)                              AS total_tokens,
       sum(cost_usd)                                  AS cost_usd
FROM litellm_usage
WHERE tenant_id = :'tenant_id' AND start_time >= :'from' AND start_time < :'to'
GROUP BY model
ORDER BY cost_usd DESC, model;

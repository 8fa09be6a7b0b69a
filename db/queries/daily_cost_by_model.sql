-- Daily cost by model (the product docs' example), for [from, to).
--   psql "$DATABASE_URL" -v from=2026-11-01 -v to=2026-12-01 -f db/queries/daily_cost_by_model.sql
-- Params: from, to (timestamptz)
SELECT (start_time AT TIME ZONE 'UTC')::date AS day,
       model,
       count(*)                    AS requests,
       sum(total_tokens)           AS tokens,
       sum(cost_usd)               AS total_cost
FROM litellm_usage
WHERE start_time >= :'from' AND start_time < :'to'
GROUP BY 1, 2
ORDER BY 1 DESC, 2;

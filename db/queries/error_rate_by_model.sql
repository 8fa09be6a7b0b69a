-- Failure rate per model in [from, to); rejected (budget / rate limit) requests are excluded.
--   psql "$DATABASE_URL" -v from=2026-11-01 -v to=2026-12-01 -f db/queries/error_rate_by_model.sql
-- Params: from, to (timestamptz)
SELECT model,
       count(*)                                         AS requests,
       count(*) FILTER (WHERE status = 'failure')       AS failures,
       round(count(*) FILTER (WHERE status = 'failure')::numeric / count(*), 4) AS error_rate
FROM litellm_usage
WHERE start_time >= :'from' AND start_time < :'to' AND status <> 'rejected'
GROUP BY model
ORDER BY error_rate DESC, model;

-- Failure rate per model in [from, to); rejected (budget / rate limit) requests are excluded.
-- Params: from, to (timestamptz)
SELECT model,
       count(*)                                         AS requests,
       count(*) FILTER (WHERE status = 'failure')       AS failures,
       round(count(*) FILTER (WHERE status = 'failure')::numeric / count(*), 4) AS error_rate
FROM litellm_usage
WHERE start_time >= %(from)s AND start_time < %(to)s AND status <> 'rejected'
GROUP BY model
ORDER BY error_rate DESC, model;

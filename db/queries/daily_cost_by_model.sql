-- Daily cost by model (the product docs' example), for [from, to).
-- Params: from, to (timestamptz)
SELECT (start_time AT TIME ZONE 'UTC')::date AS day,
       model,
       count(*)                    AS requests,
       sum(total_tokens)           AS tokens,
       sum(cost_usd)               AS total_cost
FROM litellm_usage
WHERE start_time >= %(from)s AND start_time < %(to)s
GROUP BY 1, 2
ORDER BY 1 DESC, 2;

-- One tenant's usage per model for an invoice period [from, to).
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
WHERE tenant_id = %(tenant_id)s AND start_time >= %(from)s AND start_time < %(to)s
GROUP BY model
ORDER BY cost_usd DESC, model;

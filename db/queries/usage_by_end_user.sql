-- One tenant's usage per end user (its X-BillingProxy-End-User header, OpenAI `user` or Anthropic metadata.user_id) over whole UTC days [from, to),
-- read from the daily rollup the usage writer keeps (usage_daily_attribution), not the rows.
--   psql "$DATABASE_URL" -v tenant_id=tn_… -v from=2026-11-01 -v to=2026-12-01 -f db/queries/usage_by_end_user.sql
-- Params: tenant_id (text), from, to (date)
SELECT value,
       sum(requests)::bigint                           AS requests,
       sum(requests - failures - rejected)::bigint     AS successes,
       sum(failures)::bigint                           AS failures,
       sum(rejected)::bigint                           AS rejected,
       sum(prompt_tokens)::bigint                      AS prompt_tokens,
       sum(cached_tokens)::bigint                      AS cached_tokens,
       sum(completion_tokens)::bigint                  AS completion_tokens,
       sum(total_tokens)::bigint                       AS total_tokens,
       sum(cost_usd)                                   AS cost_usd
FROM usage_daily_attribution
WHERE tenant_id = :'tenant_id' AND dimension = 'end_user' AND day >= :'from'::date AND day < :'to'::date
GROUP BY value
ORDER BY cost_usd DESC, value;

-- get_usage_by_customer(customer_id, from, to): a Stripe customer's usage per model in [from, to).
CREATE FUNCTION get_usage_by_customer(p_customer_id text, p_from timestamptz, p_to timestamptz)
RETURNS TABLE (model text, requests bigint, prompt_tokens bigint, completion_tokens bigint,
               total_tokens bigint, cost_usd numeric)
LANGUAGE sql STABLE AS $$
    SELECT u.model, count(*), sum(u.prompt_tokens), sum(u.completion_tokens),
           sum(u.total_tokens), sum(u.cost_usd)
    FROM litellm_usage u
    WHERE u.customer_id = p_customer_id AND u.start_time >= p_from AND u.start_time < p_to
    GROUP BY u.model
    ORDER BY u.model;
$$;

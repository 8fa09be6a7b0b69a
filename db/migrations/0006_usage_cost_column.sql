-- `cost`: the product docs' name for a request's cost in USD, so their example query
--   SELECT DATE(start_time), model, SUM(total_tokens), SUM(cost) FROM litellm_usage GROUP BY 1, 2
-- runs as written. Generated from cost_usd (the column everything of ours reads and writes) and
-- stored: nothing writes it (the usage writer names its columns), it can never disagree.
-- Adding a stored generated column rewrites litellm_usage (all partitions) under an ACCESS
-- EXCLUSIVE lock: on a large table, apply it in a quiet moment (the writer waits and retries;
-- rows queue in memory meanwhile).
ALTER TABLE litellm_usage
    ADD COLUMN cost numeric(20, 10) GENERATED ALWAYS AS (cost_usd) STORED;

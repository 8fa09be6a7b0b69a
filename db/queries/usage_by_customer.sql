-- A Stripe customer's usage per model in [from, to), through the SQL function.
-- Params: customer_id (text), from, to (timestamptz)
SELECT * FROM get_usage_by_customer(%(customer_id)s, %(from)s, %(to)s);

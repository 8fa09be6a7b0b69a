-- A Stripe customer's usage per model in [from, to), through the SQL function.
--   psql "$DATABASE_URL" -v customer_id=cus_123 -v from=2026-11-01 -v to=2026-12-01 -f db/queries/usage_by_customer.sql
-- Params: customer_id (text), from, to (timestamptz)
SELECT * FROM get_usage_by_customer(:'customer_id', :'from', :'to');

-- One source of spend (issue 17): a budget's spend is the usage ledger (the usage_daily and
-- usage_daily_attribution rollups, kept in the same transaction as the rows) plus what each live
-- holder has settled but not yet seen written. That last part is a holder's `pending`, recorded
-- with its lease so other instances count it as spend, not as a slice it could hand back.
ALTER TABLE budget_leases ADD COLUMN pending numeric(24, 10) NOT NULL DEFAULT 0 CHECK (pending >= 0);
-- A lease that expires unreleased (its holder was killed) leaves its whole amount *in doubt*: it
-- counts as spent for 30 minutes, or until `usage audit` has put that holder's requests on the
-- ledger and zeroes it. A holder that exits normally releases its leases (expires_at = now(),
-- amount = what is still unwritten) after its last rows are written.
-- budget_spend.spent was the sum of the holders' reports, which a crash could cut short; since
-- this migration nothing writes or reads it (instances of the previous release still add to it
-- while a rollout replaces them). It is dropped by a later migration; last_threshold stays.
COMMENT ON COLUMN budget_spend.spent IS 'unused since 0021 (spend = usage rollups + pending leases); dropped later';

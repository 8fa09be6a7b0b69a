-- Crash-safe metering (issue 17): a stream the client cut short is `cancelled`, a request admitted
-- but never completed (its instance died) is `interrupted` (written by `usage replay`/`usage audit`),
-- and usage_estimated says the token counts are ours (a tokenizer), not the provider's.
ALTER TABLE litellm_usage DROP CONSTRAINT IF EXISTS litellm_usage_status_check;
ALTER TABLE litellm_usage ADD CONSTRAINT litellm_usage_status_check
    CHECK (status IN ('success', 'failure', 'rejected', 'cancelled', 'interrupted'));
ALTER TABLE litellm_usage ADD COLUMN usage_estimated boolean NOT NULL DEFAULT false;

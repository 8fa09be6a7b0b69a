-- Audio and image tokens priced apart where the provider reports them (OpenAI's
-- prompt_tokens_details.audio_tokens / completion_tokens_details.audio_tokens, LiteLLM's
-- prompt_tokens_details.image_tokens). USD per million tokens; NULL bills them as plain input or
-- output tokens, so every existing version bills exactly as before.
ALTER TABLE price_versions
    ADD COLUMN input_audio_per_mtok  numeric(20, 10) CHECK (input_audio_per_mtok >= 0),
    ADD COLUMN output_audio_per_mtok numeric(20, 10) CHECK (output_audio_per_mtok >= 0),
    ADD COLUMN input_image_per_mtok  numeric(20, 10) CHECK (input_image_per_mtok >= 0);

-- The tokens a row was billed for by modality (parts of prompt_tokens / completion_tokens), so a
-- re-rate reproduces every dimension.
ALTER TABLE litellm_usage
    ADD COLUMN input_audio_tokens  integer NOT NULL DEFAULT 0 CHECK (input_audio_tokens >= 0),
    ADD COLUMN input_image_tokens  integer NOT NULL DEFAULT 0 CHECK (input_image_tokens >= 0),
    ADD COLUMN output_audio_tokens integer NOT NULL DEFAULT 0 CHECK (output_audio_tokens >= 0);

-- A rate card may fix them too (unset: the list price). The "a multiplier or fixed prices" check
-- counts the new columns: it is replaced (0014 left it unnamed, so it is found by its text).
ALTER TABLE rate_cards
    ADD COLUMN input_audio_per_mtok  numeric(20, 10) CHECK (input_audio_per_mtok >= 0),
    ADD COLUMN output_audio_per_mtok numeric(20, 10) CHECK (output_audio_per_mtok >= 0),
    ADD COLUMN input_image_per_mtok  numeric(20, 10) CHECK (input_image_per_mtok >= 0);
DO $$
DECLARE
    old_check text;
BEGIN
    SELECT conname INTO STRICT old_check FROM pg_constraint
    WHERE conrelid = 'rate_cards'::regclass AND contype = 'c'
      AND pg_get_constraintdef(oid) LIKE '%multiplier IS NOT NULL%';
    EXECUTE format('ALTER TABLE rate_cards DROP CONSTRAINT %I', old_check);
END
$$;
ALTER TABLE rate_cards ADD CONSTRAINT rate_cards_multiplier_or_fixed
    CHECK ((multiplier IS NOT NULL) <> (COALESCE(input_per_mtok, output_per_mtok, cached_read_per_mtok,
                                                 cache_write_5m_per_mtok, cache_write_1h_per_mtok,
                                                 input_audio_per_mtok, output_audio_per_mtok,
                                                 input_image_per_mtok) IS NOT NULL));

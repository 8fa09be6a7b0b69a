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

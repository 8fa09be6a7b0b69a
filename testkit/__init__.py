"""The harness the tests and the benchmarks share: real processes (PostgreSQL, the litellm proxy,
the relay) and local fakes of the outside world (an LLM provider, Stripe). Not shipped in the image."""

"""BillingProxy core: tenants, keys, pricing, usage metering and billing.

Nothing in this package imports litellm; ``callbacks/`` adapts LiteLLM's hooks to it.
"""

__version__ = "0.1.0"

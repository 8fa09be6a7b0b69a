"""Thin adapters that config.yaml names; the logic lives in the billingproxy package."""

"""The pinned price table and the cost of one request, in Decimal.

Prices are read from ``model_info`` in config.yaml, using LiteLLM's field names so both sides
agree: ``input_cost_per_token``, ``output_cost_per_token`` and ``cache_read_input_token_cost``
(cached prompt tokens; defaults to the input price). They are pinned: a running process never
fetches prices, and a bill can always be recomputed from the table in the repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import yaml

from billingproxy.settings import config_path

COST_QUANTUM = Decimal("1e-10")  # litellm_usage.cost_usd is NUMERIC(20, 10)
ZERO = Decimal(0)


class PriceError(ValueError):
    pass


def to_decimal(value: Any, what: str = "price") -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise PriceError(f"{what} must be a number, got {value!r}")
    # repr(float) is the shortest exact round-trip, so 2.5e-06 becomes Decimal('0.0000025').
    result = Decimal(repr(value) if isinstance(value, float) else str(value))
    if not result.is_finite() or result < 0:
        raise PriceError(f"{what} must be a non-negative number, got {value!r}")
    return result


@dataclass(frozen=True)
class ModelPrice:
    input: Decimal
    output: Decimal
    cached_input: Decimal

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal:
        """Cached prompt tokens are part of prompt_tokens and billed at their own price."""
        cached = min(max(cached_tokens, 0), max(prompt_tokens, 0))
        uncached = max(prompt_tokens, 0) - cached
        total = uncached * self.input + cached * self.cached_input + max(completion_tokens, 0) * self.output
        return total.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)


class PriceTable:
    def __init__(self, prices: dict[str, ModelPrice]) -> None:
        self._prices = prices

    def __contains__(self, model: str) -> bool:
        return model in self._prices

    def models(self) -> list[str]:
        return sorted(self._prices)

    def get(self, model: str) -> ModelPrice | None:
        return self._prices.get(model)

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal:
        """Unknown models cost zero here; the config check refuses to start without prices."""
        price = self._prices.get(model)
        if price is None:
            return ZERO
        return price.cost(prompt_tokens, completion_tokens, cached_tokens)

    @classmethod
    def from_model_list(cls, model_list: list[dict[str, Any]]) -> PriceTable:
        prices: dict[str, ModelPrice] = {}
        for entry in model_list:
            name = entry.get("model_name")
            info = entry.get("model_info") or {}
            if not name:
                raise PriceError("every model_list entry needs a model_name")
            if "input_cost_per_token" not in info:
                raise PriceError(f"model {name!r} has no pinned input_cost_per_token in model_info")
            input_price = to_decimal(info["input_cost_per_token"], f"{name} input_cost_per_token")
            prices[name] = ModelPrice(
                input=input_price,
                output=to_decimal(info.get("output_cost_per_token", 0), f"{name} output_cost_per_token"),
                cached_input=to_decimal(
                    info.get("cache_read_input_token_cost", input_price), f"{name} cache_read_input_token_cost"
                ),
            )
        return cls(prices)

    @classmethod
    def from_config(cls, path: Path | None = None) -> PriceTable:
        path = path or config_path()
        try:
            config = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError as exc:
            raise PriceError(f"config file not found: {path}") from exc
        return cls.from_model_list(config.get("model_list") or [])

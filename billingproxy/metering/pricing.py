"""The pinned price table, the cost of one request and the bound on it that a budget reserves, in Decimal.

Prices are read from ``model_info`` in config.yaml, using LiteLLM's field names so both sides
agree: ``input_cost_per_token``, ``output_cost_per_token`` and ``cache_read_input_token_cost``
(cached prompt tokens; defaults to the input price). They are pinned: a running process never
fetches prices, and a bill can always be recomputed from the table in the repository.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import yaml

from billingproxy.config import config_path
from billingproxy.errors import ConfigError

__all__ = [
    "COST_QUANTUM",
    "IMAGE_TOKEN_BOUND",
    "MAX_CHOICES",
    "OUTPUT_LIMITS",
    "ZERO",
    "ModelPrice",
    "PriceError",
    "PriceTable",
    "max_cost",
    "output_choices",
    "output_token_limit",
    "prompt_token_bound",
    "to_decimal",
]

COST_QUANTUM = Decimal("1e-10")  # litellm_usage.cost_usd is NUMERIC(20, 10)
ZERO = Decimal(0)


class PriceError(ConfigError):
    """A price in config.yaml is missing or malformed."""


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


# ---- the maximum cost of a request (what a budget reserves before the call) --------------

_TEXT_FIELDS = ("messages", "prompt", "input", "system", "tools", "functions", "instructions")
OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


# A per-item bound for an image a request only references (a URL or a file id: its bytes are not
# in the body, so the body's size does not bound it). The dearest providers' documented maximum
# per image: OpenAI's patch-based models up to 1,536 patches x 1.62 (~2,490 tokens), high detail
# 85 + 170 per tile (765 at 1024x1024); Anthropic ~1,600 (1.15 megapixels / 750); Gemini 258.
IMAGE_TOKEN_BOUND = 2_500
_IMAGE_PART_TYPES = frozenset({"image_url", "image", "input_image"})
MAX_CHOICES = 128  # OpenAI's own limit on `n`; a larger value is reserved (and refused) at 128


def prompt_token_bound(body: dict[str, Any]) -> int:
    """An upper bound on prompt tokens without a tokenizer: every BPE token covers ≥ 1 byte,
    so the UTF-8 size of the prompt-bearing fields (JSON syntax included) bounds the text; each
    image part adds ``IMAGE_TOKEN_BOUND`` (a referenced image's tokens are not in the body)."""
    relevant = {key: body[key] for key in _TEXT_FIELDS if key in body}
    text_bound = len(json.dumps(relevant, ensure_ascii=False, default=str).encode()) + 8
    return text_bound + IMAGE_TOKEN_BOUND * _image_parts(relevant)


def _image_parts(value: Any) -> int:
    if isinstance(value, dict):
        own = 1 if value.get("type") in _IMAGE_PART_TYPES else 0
        return own + sum(_image_parts(item) for item in value.values() if isinstance(item, dict | list))
    if isinstance(value, list):
        return sum(_image_parts(item) for item in value)
    return 0


def output_choices(body: dict[str, Any]) -> int:
    """How many completions the provider generates and bills: OpenAI's ``n``, and ``best_of``
    (the legacy completions API generates ``best_of`` and returns ``n``)."""
    choices = 1
    for key in ("n", "best_of"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            choices = max(choices, min(value, MAX_CHOICES))
    return choices


def output_token_limit(body: dict[str, Any]) -> int | None:
    for key in OUTPUT_LIMITS:
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def max_cost(prices: PriceTable, model: str, body: dict[str, Any], default_max_tokens: int) -> Decimal:
    price = prices.get(model)
    if price is None:
        return ZERO
    output = (output_token_limit(body) or default_max_tokens) * output_choices(body)
    return prompt_token_bound(body) * price.input + output * price.output

"""The pinned price table, the cost of one request and the bound on it that a budget reserves, in Decimal.

Prices are read from ``model_info`` in config.yaml, using LiteLLM's field names so both sides
agree: ``input_cost_per_token``, ``output_cost_per_token`` and ``cache_read_input_token_cost``
(cached prompt tokens; defaults to the input price). They are pinned: a running process never
fetches prices, and a bill can always be recomputed from the table in the repository.
"""

from __future__ import annotations

import json
from collections.abc import Callable
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
    "RequestDimensions",
    "max_cost",
    "output_choices",
    "output_token_limit",
    "prompt_token_bound",
    "request_dimensions",
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

    def get(self, model: str, dimensions: RequestDimensions | None = None) -> ModelPrice | None:
        """``dimensions`` is for the price book's request-aware bound; the pinned table has one price."""
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

# response_format: a JSON schema for structured outputs is put into the prompt and billed as input.
_TEXT_FIELDS = ("messages", "prompt", "input", "system", "tools", "functions", "instructions", "response_format")
OUTPUT_LIMITS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


# A per-item bound for an image a request only references (a URL or a file id: its bytes are not
# in the body, so the body's size does not bound it). The dearest providers' documented maximum
# per image: OpenAI's patch-based models up to 1,536 patches x 1.62 (~2,490 tokens), high detail
# 85 + 170 per tile (765 at 1024x1024); Anthropic ~1,600 (1.15 megapixels / 750); Gemini 258.
IMAGE_TOKEN_BOUND = 2_500
_IMAGE_PART_TYPES = frozenset({"image_url", "image", "input_image"})
MAX_CHOICES = 128  # OpenAI's own limit on `n`; a larger value is reserved (and refused) at 128


# A request that references a file or audio by id or URL (its bytes are not in the body, and a
# PDF can run to hundreds of pages) is bounded only by the model's context window; when config.yaml
# declares none, by the largest window any provider offers (Gemini 1.5 Pro: 2,097,152 tokens).
UNKNOWN_CONTEXT_WINDOW = 2_097_152


# With the model's own tokenizer: the per-message framing OpenAI adds around each message (3
# tokens, 1 more for a name: the cookbook's "How to count tokens") and before the reply (3), with room.
_MESSAGE_FRAMING = 8
_REPLY_FRAMING = 8
# Text counted exactly per request, at most (tiktoken: ~65 µs per 1,000 characters); the rest is
# counted by bytes. So the count costs at most ~0.5 ms of the request path (bench.prompt_bound).
EXACT_COUNT_CHARS = 8_192


def prompt_token_bound(
    body: dict[str, Any], context_window: int | None = None, count: Callable[[str], int] | None = None
) -> int:
    """An upper bound on prompt tokens. Without a tokenizer: every BPE token covers ≥ 1 byte, so
    the UTF-8 size of the prompt-bearing fields (JSON syntax included) bounds the text. With the
    model's own tokenizer (``count``, OpenAI models): message text counted as the provider counts
    it, plus framing; everything else by bytes. Each image part adds ``IMAGE_TOKEN_BOUND`` (a
    referenced image's tokens are not in the body); a referenced file or audio makes it the
    context window. The context window caps every bound (a provider bills no more prompt than the
    model accepts)."""
    relevant = {key: body[key] for key in _TEXT_FIELDS if key in body}
    if _references_media(relevant):
        return context_window or UNKNOWN_CONTEXT_WINDOW
    text_bound = _json_size(relevant) + 8
    if count is not None:
        text_bound = min(text_bound, _CountedBound(count).fields(relevant))
    bound = text_bound + IMAGE_TOKEN_BOUND * _image_parts(relevant)
    return bound if context_window is None else min(bound, context_window)


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, default=str).encode())


class _CountedBound:
    """Prompt tokens with the model's tokenizer: the strings the provider tokenizes as text are
    counted exactly (up to EXACT_COUNT_CHARS in all, then by bytes); images are left to
    IMAGE_TOKEN_BOUND; every other value (tools, tool calls, audio and file parts) by its bytes."""

    __slots__ = ("count", "left")

    def __init__(self, count: Callable[[str], int]) -> None:
        self.count, self.left = count, EXACT_COUNT_CHARS

    def text(self, text: str) -> int:
        if len(text) > self.left:
            return len(text.encode())
        self.left -= len(text)
        return self.count(text)

    def fields(self, relevant: dict[str, Any]) -> int:
        total = _REPLY_FRAMING
        for key, value in relevant.items():
            if key == "messages" and isinstance(value, list):
                total += sum(self.message(message) for message in value)
            elif key in ("prompt", "input", "instructions") and isinstance(value, str):
                total += self.text(value)
            else:
                total += _json_size(value)
        return total

    def message(self, message: Any) -> int:
        if not isinstance(message, dict):
            return _json_size(message)
        total, rest = _MESSAGE_FRAMING, {}
        for key, value in message.items():
            if key == "content" and isinstance(value, str):
                total += self.text(value)
            elif key == "content" and isinstance(value, list):
                total += sum(self.part(part) for part in value)
            elif key in ("role", "name") and isinstance(value, str):
                total += len(value.encode())
            elif value is not None:
                rest[key] = value
        return total + (_json_size(rest) if rest else 0)

    def part(self, part: Any) -> int:
        if not isinstance(part, dict):
            return _json_size(part)
        kind = part.get("type")
        if kind in _IMAGE_PART_TYPES:
            return 0  # IMAGE_TOKEN_BOUND per image part, added by the caller
        if kind == "text" and isinstance(part.get("text"), str):
            others = {key: value for key, value in part.items() if key not in ("type", "text")}
            return self.text(part["text"]) + (_json_size(others) if others else 0)
        return _json_size(part)


# Inline payloads of file and document parts (OpenAI's file_data, the Responses API's file_data,
# Anthropic's base64 / text sources): their size is in the body. Anything else is a reference.
_INLINE_KEYS = frozenset({"file_data", "data"})
_INLINE_SOURCES = frozenset({"base64", "text", "content"})


def _references_media(value: Any) -> bool:
    """A file, document or audio part whose content the body does not carry (a file id, a URL)."""
    if isinstance(value, list):
        return any(_references_media(item) for item in value)
    if not isinstance(value, dict):
        return False
    kind = value.get("type")
    if kind == "audio_url":
        return True
    if kind in _FILE_PARTS and not _inline(value):
        return True
    return any(_references_media(item) for item in value.values() if isinstance(item, dict | list))


def _inline(part: dict[str, Any]) -> bool:
    inner = part.get(part["type"]) if isinstance(part.get(part["type"]), dict) else part
    if any(inner.get(key) for key in _INLINE_KEYS):
        return True
    source = inner.get("source")
    return isinstance(source, dict) and source.get("type") in _INLINE_SOURCES


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


@dataclass(frozen=True, slots=True)
class RequestDimensions:
    """Which price dimensions beyond plain input, cached reads, output and reasoning a request can
    incur, read from its body, so a reservation multiplies by the dearest price that can actually
    occur (``prices.model.bound_prices``). Each flag errs towards True: the bound stays an upper one."""

    cache_write: bool = True  # 5-minute cache writes
    cache_write_1h: bool = True
    input_audio: bool = True
    input_image: bool = True
    output_audio: bool = True
    prompt_bound: int | None = None  # the prompt-token bound (the long-context tier applies above it)


ALL_DIMENSIONS = RequestDimensions()
# Content parts that can carry audio or images: OpenAI's input_audio / image_url, the Responses
# API's input_image / input_file, Anthropic's image / document, LiteLLM's file and audio_url.
_AUDIO_PARTS = frozenset({"input_audio", "audio", "audio_url"})
_FILE_PARTS = frozenset({"file", "input_file", "document"})  # a PDF or a media file: either modality
# The call types whose bodies these fields describe; any other (a passthrough, a realtime or audio
# route) gets every dimension.
_READ_CALL_TYPES = frozenset({"acompletion", "atext_completion", "aresponses", "aembedding", "anthropic_messages"})


def request_dimensions(
    body: dict[str, Any],
    call_type: str | None = None,
    *,
    injects_cache_control: bool = False,
    context_window: int | None = None,
    count: Callable[[str], int] | None = None,
) -> RequestDimensions:
    """What the body allows. Cache writes are opt-in per breakpoint: Anthropic (and Bedrock through
    LiteLLM) write a cache only at a ``cache_control`` marker (``cachePoint`` in Bedrock's own
    shape), the 1-hour cache only where the marker says ``"ttl": "1h"``; a model whose
    ``litellm_params`` have ``cache_control_injection_points`` gets markers from LiteLLM, so both.
    Audio output needs ``modalities`` with "audio" (or an ``audio`` parameter). ``count`` is the
    model's own tokenizer where it has one we can run (``prompt_token_bound``)."""
    if call_type is not None and call_type not in _READ_CALL_TYPES:
        return ALL_DIMENSIONS
    relevant = [body[key] for key in _TEXT_FIELDS if key in body]
    found = _Found()
    _scan([*relevant, {"cache_control": body["cache_control"]}] if "cache_control" in body else relevant, found)
    modalities = body.get("modalities")
    audio_out = body.get("audio") is not None or (
        isinstance(modalities, list) and any(str(m).lower() == "audio" for m in modalities)
    )
    return RequestDimensions(
        cache_write=found.cache_write or injects_cache_control,
        cache_write_1h=found.cache_write_1h or injects_cache_control,
        input_audio=found.audio or found.file,
        input_image=found.image or found.file,
        output_audio=audio_out,
        prompt_bound=prompt_token_bound(body, context_window, count),
    )


class _Found:
    __slots__ = ("audio", "cache_write", "cache_write_1h", "file", "image")

    def __init__(self) -> None:
        self.cache_write = self.cache_write_1h = self.audio = self.image = self.file = False


def _scan(value: Any, found: _Found) -> None:
    if isinstance(value, dict):
        marker = value.get("cache_control")
        if marker is not None or "cachePoint" in value:
            found.cache_write = True
            # Anthropic's default lifetime is 5 minutes; anything but an explicit "5m" may be 1 hour.
            ttl = marker.get("ttl") if isinstance(marker, dict) else None
            if (ttl is not None and str(ttl) != "5m") or "cachePoint" in value:
                found.cache_write_1h = True
        kind = value.get("type")
        if kind in _AUDIO_PARTS:
            found.audio = True
        elif kind in _IMAGE_PART_TYPES:
            found.image = True
        elif kind in _FILE_PARTS:
            found.file = True
        for item in value.values():
            if isinstance(item, dict | list):
                _scan(item, found)
    elif isinstance(value, list):
        for item in value:
            _scan(item, found)


def max_cost(
    prices: PriceTable,
    model: str,
    body: dict[str, Any],
    default_max_tokens: int,
    dimensions: RequestDimensions | None = None,
    output_cap: int | None = None,
) -> Decimal:
    """The most ``body`` can cost: its prompt bound at the dearest input price it can incur, plus
    its output limit (``default_max_tokens`` if it sets none; at most the model's ``output_cap``,
    beyond which the provider refuses) for every completion generated, at the output price."""
    price = prices.get(model, dimensions)
    if price is None:
        return ZERO
    limit = output_token_limit(body) or default_max_tokens
    output = (min(limit, output_cap) if output_cap else limit) * output_choices(body)
    prompt = dimensions.prompt_bound if dimensions and dimensions.prompt_bound is not None else None
    return (prompt if prompt is not None else prompt_token_bound(body)) * price.input + output * price.output

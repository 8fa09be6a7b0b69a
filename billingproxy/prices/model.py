"""Price versions, rate cards and the cost of one request under them, in exact Decimal.

Prices are USD per million tokens (``*_per_mtok``), as providers publish them. Every dimension of
a version is explicit (the config import fills in the provider defaults: cache writes at 1.25 times the
input price for the 5-minute cache and 2 times for the 1-hour cache), so a row's cost can always be
recomputed from the version id it carries.

Audio and image tokens (OpenAI's ``prompt_tokens_details.audio_tokens`` and
``completion_tokens_details.audio_tokens``; ``prompt_tokens_details.image_tokens`` where LiteLLM
reports them, e.g. Gemini) are part of the prompt and completion counts. They have their own price
where a version sets one (``input_audio``, ``output_audio``, ``input_image``); NULL bills them as
plain input or output tokens, so a version without them bills exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

from billingproxy.errors import InvalidInput
from billingproxy.metering import COST_QUANTUM, ZERO
from billingproxy.metering.pricing import ALL_DIMENSIONS, RequestDimensions

__all__ = [
    "DIMENSIONS",
    "MODALITIES",
    "MTOK",
    "PriceVersion",
    "RateCard",
    "TokenUsage",
    "bound_prices",
    "effective_prices",
    "parse_price",
    "priced_cost",
    "request_cost",
]

MTOK = Decimal(1_000_000)
MODALITIES = ("input_audio", "output_audio", "input_image")  # optional: NULL = plain input / output
# The dimensions a rate card may fix (a version has all of them, plus reasoning and the tier).
DIMENSIONS = ("input", "output", "cached_read", "cache_write_5m", "cache_write_1h", *MODALITIES)
_MAX_PRICE = Decimal(10) ** 9  # USD per million tokens; far above any real price


def parse_price(value: Any, what: str) -> Decimal:
    """An operator's price: a plain non-negative decimal with at most 10 places, never rounded."""
    try:
        price = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except ArithmeticError:
        raise InvalidInput(f"{what} must be a decimal number of USD per million tokens, got {value!r}") from None
    if isinstance(value, bool) or not price.is_finite() or price < 0 or price >= _MAX_PRICE:
        raise InvalidInput(f"{what} must be a non-negative number below 10^9, got {value!r}")
    exponent = price.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -10:
        raise InvalidInput(f"{what} has more than 10 decimal places: {value!r}")
    return price


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """One request's tokens. ``prompt`` includes cached reads and cache writes; ``completion``
    includes reasoning (as LiteLLM reports them)."""

    prompt: int = 0
    completion: int = 0
    cached_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0
    # Parts of ``prompt`` / ``completion`` the provider reported by modality.
    input_audio: int = 0
    input_image: int = 0
    output_audio: int = 0


@dataclass(frozen=True, slots=True)
class PriceVersion:
    id: int | None
    model: str
    effective_from: datetime
    input: Decimal
    output: Decimal
    cached_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    reasoning: Decimal | None = None
    long_context_threshold: int | None = None
    long_input: Decimal | None = None
    long_output: Decimal | None = None
    input_audio: Decimal | None = None
    output_audio: Decimal | None = None
    input_image: Decimal | None = None
    mode: str = "chat"
    source: str = "config"
    created_by: str = ""
    reason: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> PriceVersion:
        return cls(
            id=row["id"],
            model=row["model"],
            effective_from=row["effective_from"],
            input=row["input_per_mtok"],
            output=row["output_per_mtok"],
            cached_read=row["cached_read_per_mtok"],
            cache_write_5m=row["cache_write_5m_per_mtok"],
            cache_write_1h=row["cache_write_1h_per_mtok"],
            reasoning=row["reasoning_per_mtok"],
            long_context_threshold=row["long_context_threshold"],
            long_input=row["long_input_per_mtok"],
            long_output=row["long_output_per_mtok"],
            input_audio=row.get("input_audio_per_mtok"),
            output_audio=row.get("output_audio_per_mtok"),
            input_image=row.get("input_image_per_mtok"),
            mode=row["mode"],
            source=row["source"],
            created_by=row["created_by"],
            reason=row["reason"],
        )

    def same_prices(self, other: PriceVersion) -> bool:
        return _prices_of(self) == _prices_of(other)

    def at_tier(self, prompt_tokens: int) -> PriceVersion:
        """The version as it prices a request of this size: above the threshold, the long tier
        (cache reads and writes scaled like the input price)."""
        if self.long_context_threshold is None or prompt_tokens <= self.long_context_threshold:
            return self
        long_input = self.long_input if self.long_input is not None else self.input
        long_output = self.long_output if self.long_output is not None else self.output
        scale = long_input / self.input if self.input else Decimal(1)
        out_scale = long_output / self.output if self.output else Decimal(1)
        return replace(
            self,
            input=long_input,
            output=long_output,
            cached_read=self.cached_read * scale,
            cache_write_5m=self.cache_write_5m * scale,
            cache_write_1h=self.cache_write_1h * scale,
            reasoning=self.reasoning * out_scale if self.reasoning is not None else None,
            input_audio=self.input_audio * scale if self.input_audio is not None else None,
            input_image=self.input_image * scale if self.input_image is not None else None,
            output_audio=self.output_audio * out_scale if self.output_audio is not None else None,
            long_context_threshold=None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "model": self.model,
            "effective_from": self.effective_from.isoformat(),
            "input_per_mtok": _plain(self.input),
            "output_per_mtok": _plain(self.output),
            "cached_read_per_mtok": _plain(self.cached_read),
            "cache_write_5m_per_mtok": _plain(self.cache_write_5m),
            "cache_write_1h_per_mtok": _plain(self.cache_write_1h),
            "reasoning_per_mtok": _plain(self.reasoning),
            "long_context_threshold": self.long_context_threshold,
            "long_input_per_mtok": _plain(self.long_input),
            "long_output_per_mtok": _plain(self.long_output),
            "input_audio_per_mtok": _plain(self.input_audio),
            "output_audio_per_mtok": _plain(self.output_audio),
            "input_image_per_mtok": _plain(self.input_image),
            "mode": self.mode,
            "source": self.source,
            "created_by": self.created_by,
            "reason": self.reason,
        }


def _prices_of(v: PriceVersion) -> tuple:
    values = (v.input, v.output, v.cached_read, v.cache_write_5m, v.cache_write_1h, v.reasoning, v.long_input)
    values += (v.long_output, v.input_audio, v.output_audio, v.input_image)
    return (*(None if d is None else d.normalize() for d in values), v.long_context_threshold)


def _plain(value: Decimal | None) -> str | None:
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return text


@dataclass(frozen=True, slots=True)
class RateCard:
    id: int | None
    tenant_id: str
    model: str | None  # None: every model
    valid_from: datetime
    valid_until: datetime | None
    multiplier: Decimal | None = None
    fixed: dict[str, Decimal] = field(default_factory=dict)  # dimension -> USD per million tokens
    created_by: str = ""
    reason: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RateCard:
        fixed = {d: row[f"{d}_per_mtok"] for d in DIMENSIONS if row.get(f"{d}_per_mtok") is not None}
        return cls(
            id=row["id"],
            tenant_id=row["tenant_id"],
            model=row["model"],
            valid_from=row["valid_from"],
            valid_until=row["valid_until"],
            multiplier=row["multiplier"],
            fixed=fixed,
            created_by=row["created_by"],
            reason=row["reason"],
        )

    def covers(self, at: datetime) -> bool:
        return self.valid_from <= at and (self.valid_until is None or at < self.valid_until)

    def apply(self, version: PriceVersion) -> PriceVersion:
        if self.multiplier is not None:
            m = self.multiplier
            return replace(
                version,
                input=version.input * m,
                output=version.output * m,
                cached_read=version.cached_read * m,
                cache_write_5m=version.cache_write_5m * m,
                cache_write_1h=version.cache_write_1h * m,
                reasoning=version.reasoning * m if version.reasoning is not None else None,
                input_audio=version.input_audio * m if version.input_audio is not None else None,
                output_audio=version.output_audio * m if version.output_audio is not None else None,
                input_image=version.input_image * m if version.input_image is not None else None,
            )
        return replace(version, **self.fixed)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "model": self.model,
            "multiplier": _plain(self.multiplier),
            **{f"{d}_per_mtok": _plain(self.fixed.get(d)) for d in DIMENSIONS},
            "valid_from": self.valid_from.isoformat() if self.valid_from.year > 1 else None,
            "valid_until": self.valid_until.isoformat() if self.valid_until else None,
            "created_by": self.created_by,
            "reason": self.reason,
        }


def effective_prices(version: PriceVersion, prompt_tokens: int, card: RateCard | None = None) -> PriceVersion:
    """The prices a request of this size pays: the tier by prompt size, then the tenant's rate card."""
    p = version.at_tier(prompt_tokens)
    return card.apply(p) if card is not None else p


def request_cost(version: PriceVersion, usage: TokenUsage, card: RateCard | None = None) -> Decimal:
    """The billed cost of one request: the tier by prompt size, then the tenant's rate card."""
    return priced_cost(effective_prices(version, usage.prompt, card), usage)


def priced_cost(p: PriceVersion, usage: TokenUsage) -> Decimal:
    """``usage`` at the effective prices ``p`` (see ``effective_prices``)."""
    prompt = max(usage.prompt, 0)
    cached = min(max(usage.cached_read, 0), prompt)
    write_1h = min(max(usage.cache_write_1h, 0), prompt - cached)
    write_5m = min(max(usage.cache_write_5m, 0), prompt - cached - write_1h)
    uncached = prompt - cached - write_1h - write_5m
    # Audio and image tokens are counted among the uncached input (a cached read or a cache
    # write is billed at its own price whatever its modality, as LiteLLM does without a separate
    # cached-audio price); an unpriced modality stays plain input.
    audio_in = min(max(usage.input_audio, 0), uncached) if p.input_audio is not None else 0
    image_in = min(max(usage.input_image, 0), uncached - audio_in) if p.input_image is not None else 0
    plain_input = uncached - audio_in - image_in
    completion = max(usage.completion, 0)
    audio_out = min(max(usage.output_audio, 0), completion) if p.output_audio is not None else 0
    reasoning = min(max(usage.reasoning, 0), completion - audio_out) if p.reasoning is not None else 0
    total = (
        plain_input * p.input
        + cached * p.cached_read
        + write_5m * p.cache_write_5m
        + write_1h * p.cache_write_1h
        + (completion - reasoning - audio_out) * p.output
        + (reasoning * p.reasoning if p.reasoning is not None else ZERO)
        + (audio_in * p.input_audio if p.input_audio is not None else ZERO)
        + (image_in * p.input_image if p.input_image is not None else ZERO)
        + (audio_out * p.output_audio if p.output_audio is not None else ZERO)
    )
    return (total / MTOK).quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)


def bound_prices(
    version: PriceVersion, card: RateCard | None, dimensions: RequestDimensions | None = None
) -> tuple[Decimal, Decimal]:
    """(per prompt token, per output token) upper bounds in USD per token, for budget reservations,
    after the rate card: the dearest input-side and output-side dimension that can occur for the
    request (``dimensions``, read from its body; None: every dimension). Input and cached reads
    can always occur, and so can reasoning; cache writes, audio and image prices only where the
    body allows them (``metering.pricing.request_dimensions``), and the long-context tier only if
    the prompt bound is above its threshold. The bound stays a true upper bound: a dimension that
    does not occur is billed at none of these prices, and a NULL audio / image price is the input
    (output) price, already counted."""
    d = dimensions or ALL_DIMENSIONS
    tiers = [version]
    threshold = version.long_context_threshold
    if threshold is not None and (d.prompt_bound is None or d.prompt_bound > threshold):
        tiers.append(version.at_tier(threshold + 1))
    worst_in, worst_out = ZERO, ZERO
    for tier in tiers:
        p = card.apply(tier) if card is not None else tier
        candidates_in = [p.input, p.cached_read]
        candidates_in += [p.cache_write_5m] if d.cache_write else []
        candidates_in += [p.cache_write_1h] if d.cache_write_1h else []
        candidates_in += [p.input_audio] if d.input_audio and p.input_audio is not None else []
        candidates_in += [p.input_image] if d.input_image and p.input_image is not None else []
        candidates_out = [p.output] + ([p.reasoning] if p.reasoning is not None else [])
        candidates_out += [p.output_audio] if d.output_audio and p.output_audio is not None else []
        worst_in = max(worst_in, *candidates_in)
        worst_out = max(worst_out, *candidates_out)
    return worst_in / MTOK, worst_out / MTOK

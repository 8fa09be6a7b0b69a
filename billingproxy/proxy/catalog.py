"""The models config.yaml offers and whether their provider credentials are there.

LiteLLM resolves ``os.environ/NAME`` in ``litellm_params`` when it calls the provider; a model whose
variable is unset fails only then, with a 500 after the provider's timeout. Admission refuses it at
once instead (503 ``model_not_configured``), and ``doctor`` names the missing variables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from billingproxy.config import config_path, is_set
from billingproxy.errors import ConfigError
from billingproxy.metering import RequestDimensions, request_dimensions, tokenizer

__all__ = ["ModelCatalog", "ModelEntry"]

_ENV_PREFIX = "os.environ/"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    provider_model: str
    variables: tuple[str, ...]  # every os.environ/NAME its litellm_params refer to
    injects_cache_control: bool = False  # LiteLLM adds cache_control markers (cache writes possible)
    max_input_tokens: int | None = None  # model_info.max_input_tokens: the context window
    max_output_tokens: int | None = None  # model_info.max_output_tokens: the most a reply can bill

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(name for name in self.variables if not is_set(name))


class ModelCatalog:
    def __init__(self, entries: list[ModelEntry]) -> None:
        self.entries = entries
        self.names = frozenset(entry.name for entry in entries)
        self.injecting = frozenset(entry.name for entry in entries if entry.injects_cache_control)
        # Per model: its context window and its output cap, where config.yaml declares them.
        self.windows = _widest(entries, "max_input_tokens")
        self.output_caps = _widest(entries, "max_output_tokens")
        # The tokenizer that counts a model's prompt as its provider does, if every deployment
        # has the same one (OpenAI models tiktoken knows by name).
        self.encodings: dict[str, str | None] = {}
        for entry in entries:
            encoding = tokenizer.encoding_for_model(entry.provider_model)
            known = self.encodings.get(entry.name, encoding)
            self.encodings[entry.name] = encoding if known == encoding else None
        # A model name can have several deployments: it is usable if any of them is configured.
        self.unconfigured = {
            entry.name: entry.missing
            for entry in entries
            if entry.missing and all(e.missing for e in entries if e.name == entry.name)
        }

    @classmethod
    def from_config(cls, path: Path | None = None) -> ModelCatalog:
        path = path or config_path()
        try:
            config = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        return cls([_entry(item) for item in config.get("model_list") or [] if item.get("model_name")])

    def injects_cache_control(self, model: str) -> bool:
        """Whether LiteLLM adds prompt-caching markers to this model's requests (any deployment);
        an unknown model: assume so (the reservation stays an upper bound)."""
        return model not in self.names or model in self.injecting

    def context_window(self, model: str) -> int | None:
        """The most prompt tokens a request to ``model`` can carry, if config.yaml declares it."""
        return self.windows.get(model)

    def output_cap(self, model: str) -> int | None:
        """The most output tokens one reply from ``model`` can carry (and the provider bill), if
        config.yaml declares it: a request asking for more is refused by the provider."""
        return self.output_caps.get(model)

    def request_dimensions(self, model: str, body: dict[str, Any], call_type: str) -> RequestDimensions:
        """What ``body`` may cost beyond its limits, as this model's deployments bill it: prompt
        bound (its tokenizer where loaded), cache-control markers, context window."""
        return request_dimensions(
            body,
            call_type,
            injects_cache_control=self.injects_cache_control(model),
            context_window=self.context_window(model),
            count=self.token_counter(model),
        )

    def token_counter(self, model: str) -> Callable[[str], int] | None:
        """The model's own tokenizer, once loaded (``load_tokenizers``); None: count bytes."""
        return tokenizer.exact_counter(self.encodings.get(model))

    def load_tokenizers(self) -> None:
        """Load the tokenizers the models need (~0.7 s each): off the request path, at start."""
        tokenizer.load_encodings({name for name in self.encodings.values() if name})

    def knows(self, model: str) -> bool:
        return model in self.names

    def refusal_reason(self, model: str) -> str | None:
        missing = self.unconfigured.get(model)
        if not missing:
            return None
        return f"Model '{model}' is not configured on this gateway (provider credentials missing); ask its operator."


def _widest(entries: list[ModelEntry], field: str) -> dict[str, int | None]:
    """Per model name, the largest of its deployments' ``field`` (a bound must hold for any of
    them), or None if one of them declares none."""
    widest: dict[str, int | None] = {}
    for entry in entries:
        known, value = widest.get(entry.name, 0), getattr(entry, field)
        widest[entry.name] = None if known is None or value is None else max(known, value)
    return widest


def _entry(item: dict[str, Any]) -> ModelEntry:
    params = item.get("litellm_params") or {}
    variables = tuple(
        sorted({value[len(_ENV_PREFIX) :] for value in params.values() if str(value).startswith(_ENV_PREFIX)})
    )
    injects = bool(params.get("cache_control_injection_points"))
    info = item.get("model_info") or {}
    window, output_cap = (_positive(item, info, name) for name in ("max_input_tokens", "max_output_tokens"))
    return ModelEntry(str(item["model_name"]), str(params.get("model", "")), variables, injects, window, output_cap)


def _positive(item: dict[str, Any], info: dict[str, Any], name: str) -> int | None:
    value = info.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"model {item['model_name']!r}: model_info.{name} must be a positive integer")
    return value

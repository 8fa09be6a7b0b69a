"""Token counts of our own, for when the provider gives none (a stream cut short, a request whose
instance died): tiktoken's ``cl100k_base`` (LiteLLM ships it and points TIKTOKEN_CACHE_DIR at it, so
no download). The encoder is loaded once; without it we fall back to ~4 bytes a token.
Counts made here are estimates: records built from them carry ``usage_estimated = true``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache
from typing import Any

__all__ = ["count_prompt", "count_text", "encoder", "encoding_for_model", "exact_counter", "load_encodings"]

log = logging.getLogger("billingproxy.tokenizer")
_PROMPT_KEYS = ("content", "text", "input", "prompt", "system", "instructions", "arguments")


@cache
def encoder() -> Any:
    try:
        import tiktoken

        return tiktoken.get_encoding("cl100k_base")
    except (ImportError, OSError, ValueError) as exc:  # offline without a cached file: the byte fallback still counts
        log.warning("tokenizer unavailable, counting ~4 bytes a token: %s", type(exc).__name__)
        return None


# ---- exact counts for budget reservations ---------------------------------------------------
# OpenAI bills a model's text as its tiktoken encoding counts it, so for the models tiktoken knows
# by name a prompt bound can count text exactly instead of by bytes (~4.4 bytes a token in
# English). Encoders load in the background at start (~0.7 s each); until then, and for every
# other model, the bound stays the byte count.
_EXACT_PROVIDERS = ("openai/", "text-completion-openai/")
_counters: dict[str, Callable[[str], int]] = {}


def encoding_for_model(provider_model: str) -> str | None:
    """tiktoken's encoding for an OpenAI model (``openai/gpt-4o-mini`` -> ``o200k_base``), or None
    where the provider is not OpenAI or tiktoken does not know the model."""
    prefix = next((p for p in _EXACT_PROVIDERS if provider_model.startswith(p)), None)
    if prefix is None:
        return None
    try:
        import tiktoken

        return tiktoken.encoding_name_for_model(provider_model[len(prefix) :])
    except (ImportError, KeyError):
        return None


def load_encodings(names: set[str]) -> None:
    """Load these encodings (off the request path); one that cannot load is left to the byte bound."""
    for name in sorted(names - _counters.keys()):
        try:
            import tiktoken

            encode = tiktoken.get_encoding(name).encode_ordinary  # the text as text: no special tokens
            _counters[name] = lambda text, encode=encode: len(encode(text))
        except (ImportError, OSError, ValueError) as exc:
            log.warning("tokenizer %s unavailable, prompt bounds count bytes: %s", name, type(exc).__name__)


def exact_counter(name: str | None) -> Callable[[str], int] | None:
    """text -> tokens in encoding ``name`` if it is loaded, else None (never loads: it is called
    on the request path)."""
    return _counters.get(name) if name else None


def count_text(text: str) -> int:
    if not text:
        return 0
    enc = encoder()
    if enc is None:
        return (len(text.encode()) + 3) // 4
    return len(enc.encode(text, disallowed_special=()))


def _texts(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for item in value:
            _texts(item, out)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key in _PROMPT_KEYS or key == "messages":
                _texts(item, out)


def count_prompt(body: dict[str, Any]) -> int:
    """Prompt tokens of a request body: its text parts plus ~4 tokens of framing per message."""
    out: list[str] = []
    for key in ("messages", "prompt", "input", "system", "instructions"):
        _texts(body.get(key), out)
    messages = body.get("messages")
    framing = 4 * len(messages) if isinstance(messages, list) else 0
    return sum(count_text(text) for text in out) + framing

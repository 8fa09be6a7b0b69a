"""Token counts of our own, for when the provider gives none (a stream cut short, a request whose
instance died): tiktoken's ``cl100k_base`` (LiteLLM ships it and points TIKTOKEN_CACHE_DIR at it, so
no download). The encoder is loaded once; without it we fall back to ~4 bytes a token.
Counts made here are estimates: records built from them carry ``usage_estimated = true``.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

__all__ = ["count_prompt", "count_text", "encoder"]

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

"""A metered stream: the usage record is made when the provider's last chunk has been relayed,
before the stream ends, instead of later on LiteLLM's logging worker.

Per chunk it only looks at attributes (a few getattr): the provider's usage arrives on the last
chunk (``usage`` when the client asked ``stream_options.include_usage``, else LiteLLM puts it in
the chunk's hidden params). The relayed text pieces are kept (references, no copies) so a stream
cut short can be counted (``billingproxy.proxy.cancelled``).
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from billingproxy import shutdown
from billingproxy.metering import output_choices, output_token_limit
from billingproxy.metering.tokenizer import count_prompt, count_text
from billingproxy.proxy import answered, inflight

__all__ = ["metered_stream", "record_cut", "record_disconnected"]

log = logging.getLogger("billingproxy.streaming")


class StreamState:
    """What has been relayed so far."""

    __slots__ = ("call_type", "hidden", "pieces", "sse", "usage")

    def __init__(self) -> None:
        self.usage: Any = None
        self.hidden: Mapping[str, Any] | None = None
        self.pieces: list[str] = []
        self.call_type: str | None = None  # the shape of ``usage`` when it is not OpenAI's
        self.sse: AnthropicEvents | None = None

    def see(self, chunk: Any) -> None:
        if isinstance(chunk, bytes | bytearray | str):
            # Anthropic's /v1/messages: LiteLLM relays the provider's server-sent events as they are.
            self.sse = self.sse or AnthropicEvents(self)
            self.sse.feed(chunk)
            return
        hidden = getattr(chunk, "_hidden_params", None)
        usage = getattr(chunk, "usage", None) or (hidden.get("usage") if isinstance(hidden, dict) else None)
        if usage:
            self.usage = usage
        if hidden and self.hidden is None:
            self.hidden = hidden
        choices = getattr(chunk, "choices", None)
        if choices:
            delta = getattr(choices[0], "delta", None)
            content = getattr(delta, "content", None)
            if content:
                self.pieces.append(content)


class AnthropicEvents:
    """Reads Anthropic's stream events for what metering needs: the usage of ``message_start``
    (input and cache tokens) completed by ``message_delta``'s (output tokens, cumulative), and the
    text relayed (text, thinking and tool-input deltas), so a cut stream counts its completion.
    Only ``data:`` lines naming one of those events are parsed; a line split across chunks waits
    for its end."""

    __slots__ = ("decoder", "partial", "started", "state")

    def __init__(self, state: StreamState) -> None:
        self.state = state
        self.partial = ""
        self.started: dict[str, Any] = {}
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")  # a character may span chunks

    def feed(self, chunk: bytes | bytearray | str) -> None:
        text = self.partial + (chunk if isinstance(chunk, str) else self.decoder.decode(bytes(chunk)))
        *lines, self.partial = text.split("\n")
        for line in lines:
            if line.startswith("data:") and ('_delta"' in line or '"message_start"' in line):
                self._event(line[5:])

    def _event(self, data: str) -> None:
        try:
            event = json.loads(data)
        except ValueError:
            return
        kind = event.get("type") if isinstance(event, dict) else None
        if kind == "message_start":
            self.started = dict((event.get("message") or {}).get("usage") or {})
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            piece = delta.get("text") or delta.get("thinking") or delta.get("partial_json")
            if isinstance(piece, str) and piece:
                self.state.pieces.append(piece)
        elif kind == "message_delta" and isinstance(event.get("usage"), dict):
            # message_delta's counts are cumulative and may restate input and cache tokens.
            usage = {**self.started, **{k: v for k, v in event["usage"].items() if v is not None}}
            self.state.usage, self.state.call_type = usage, "anthropic_messages"


async def metered_stream(
    chunks: AsyncIterator[Any], data: Mapping[str, Any], auth_meta: Mapping[str, Any] | None
) -> AsyncIterator[Any]:
    """Relay ``chunks`` unchanged; record the request when the provider's stream has ended, or as
    ``cancelled`` at once when the client closed it early (its reservation settled with it)."""
    state = StreamState()
    finished = cut = False
    try:
        async for chunk in chunks:
            state.see(chunk)
            yield chunk
        finished = True
    except (GeneratorExit, asyncio.CancelledError):
        cut = True  # the client went away (or shutdown cut the stream)
        raise
    finally:
        if finished:
            _record_finished(data, auth_meta, state)
        elif cut:
            # Cut by the shutdown grace (SIGTERM): interrupted; else the client went away.
            record_cut(data, auth_meta, state, status="interrupted" if shutdown.stopping() else "cancelled")
        # An upstream error: LiteLLM's failure callback records it, as before.


def _record_finished(data: Mapping[str, Any], auth_meta: Mapping[str, Any] | None, state: StreamState) -> None:
    if not state.usage:
        return  # no provider usage seen: LiteLLM's logging callback records it, as before
    try:
        payload = answered.payload_of_response(
            data,
            auth_meta,
            usage=answered.usage_dict(state.usage, state.call_type),
            hidden=state.hidden,
            stream=True,
            end_time=time.time(),
        )
        answered.record_answered(payload)
    except Exception:
        log.exception("recording a finished stream failed")


def record_disconnected(data: Mapping[str, Any], auth_meta: Mapping[str, Any] | None) -> None:
    """The client went away while the provider had not answered yet (LiteLLM's
    ``cancel_on_disconnect`` cancelled the upstream call and answers 499): ``cancelled``, prompt
    tokens counted, no completion, estimated; its reservation settled now, not after the stale
    timeout. A no-op for a request already recorded."""
    record_cut(data, auth_meta)


_CUT_BY = {"cancelled": (499, "client_disconnected"), "interrupted": (None, "shutdown")}


def record_cut(
    data: Mapping[str, Any],
    auth_meta: Mapping[str, Any] | None,
    state: StreamState | None = None,
    *,
    status: str = "cancelled",
) -> bool:
    """A request closed before its end: ``cancelled`` (the client left) or ``interrupted`` (the
    shutdown cut it), prompt tokens counted, completion tokens counted from what was relayed,
    ``usage_estimated`` unless the provider's usage had arrived. LiteLLM's later log of it (a
    local estimate stored as success) is skipped by call id. False if it was recorded already."""
    state = state or StreamState()
    if answered.was_recorded(str(data.get("litellm_call_id"))):
        return False
    http_status, error_type = _CUT_BY[status]
    try:
        estimated = not state.usage
        if estimated:
            prompt = count_prompt(dict(data))
            completion = count_text("".join(state.pieces))
            limit = output_token_limit(data)
            if limit is not None:  # the provider bills no more than the limit per choice: ours may differ
                completion = min(completion, limit * output_choices(data))
            usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        else:
            usage = answered.usage_dict(state.usage, state.call_type)
        payload = answered.payload_of_response(
            data,
            auth_meta,
            usage=usage,
            hidden=state.hidden,
            stream=bool(data.get("stream")),
            end_time=time.time(),
            start_time=inflight.admitted_at(str(data.get("litellm_call_id"))),
        )
        answered.record_answered(
            payload, status=status, http_status=http_status, error_type=error_type, usage_estimated=estimated
        )
        return True
    except Exception:  # metering must never break the relay
        log.exception("recording a cut request failed")
        return False

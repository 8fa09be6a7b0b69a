"""A fake LLM provider: OpenAI-compatible and Anthropic-style endpoints on 127.0.0.1.

Token counts are deterministic so tests can compute the expected bill independently:

* prompt tokens = number of whitespace-separated words in the request's text
* completion tokens = ``max_tokens`` (or ``max_output_tokens``) if given, else 8

Directives in the request text steer one request (safe under concurrency):

* ``[[fault:429]]`` / ``[[fault:500]]`` / ``[[fault:400]]``  an HTTP error
* ``[[fault:timeout]]``       sleep far longer than any test timeout
* ``[[fault:broken_stream]]`` send two chunks then drop the connection
* ``[[cached:N]]``            report N cached prompt tokens
* ``[[reasoning:N]]``         report N reasoning tokens
* ``[[cache_write:N]]``       (Anthropic) report N cache-creation tokens, 5-minute cache
* ``[[cache_write_1h:N]]``    (Anthropic) of which N more for the 1-hour cache (``cache_creation`` split)
* ``[[audio_in:N]]``          N more prompt tokens, reported as input audio tokens
* ``[[audio_out:N]]``         N of the completion tokens reported as output audio tokens
* ``[[image_details:1]]``     report the image parts' tokens as ``prompt_tokens_details.image_tokens``
* ``[[latency:MS]]``          wait MS before answering
* ``[[first_token:MS]]``      (streams) send the headers at once, then wait MS before the first chunk
* ``[[chunk_ms:MS]]``         (streams) wait MS between chunks (a long generation)

The modality details follow OpenAI's usage object (platform.openai.com/docs/api-reference/chat/object,
``usage``): ``prompt_tokens_details.audio_tokens`` and ``completion_tokens_details.audio_tokens``
are parts of ``prompt_tokens`` and ``completion_tokens``. OpenAI reports no image tokens on chat
completions; LiteLLM's ``PromptTokensDetailsWrapper.image_tokens`` carries them for the providers
that count them (Gemini's modality breakdown), which ``[[image_details:1]]`` stands in for.

Like the real API, ``n`` > 1 returns n choices and bills every one (``usage.completion_tokens``
is their sum), and each ``image_url`` part costs image tokens (765, not its URL's length).

``POST /_control`` sets defaults for every request (``latency_ms``, ``fault``);
``GET /_stats`` returns how many model calls arrived, per path.

Run it alone with ``python -m testkit.fakes.upstream --port 9999``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from collections import Counter
from typing import Any

from aiohttp import web

from testkit.fakes.aioserver import ThreadedAioServer

DIRECTIVE = re.compile(r"\[\[(\w+):([\w.]+)\]\]")
DEFAULT_COMPLETION_TOKENS = 8


def _texts(value: Any) -> list[str]:
    """Every string inside a JSON value (messages, content parts, input lists)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for item in value for t in _texts(item)]
    if isinstance(value, dict):
        return [t for key, item in value.items() if key in ("content", "text", "input", "prompt") for t in _texts(item)]
    return []


IMAGE_TOKENS = 765


def _image_parts(messages: Any) -> int:
    """Image content parts (OpenAI's ``image_url``) in a chat request's messages."""
    if not isinstance(messages, list):
        return 0
    count = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list):
            count += sum(1 for part in content if isinstance(part, dict) and part.get("type") == "image_url")
    return count


class Scenario:
    """What one request asked for, derived from its body."""

    def __init__(self, body: dict[str, Any], defaults: dict[str, Any]) -> None:
        parts: list[str] = []
        for key in ("messages", "prompt", "input", "system"):
            parts.extend(_texts(body.get(key)))
        self.text = text = " ".join(parts)
        directives = dict(DIRECTIVE.findall(text))
        self.fault: str | None = directives.get("fault", defaults.get("fault"))
        self.latency_s = float(directives.get("latency", defaults.get("latency_ms", 0))) / 1000
        self.first_token_s = float(directives.get("first_token", 0)) / 1000
        self.chunk_s = float(directives.get("chunk_ms", 0)) / 1000
        self.cached_tokens = int(directives.get("cached", 0))
        self.reasoning_tokens = int(directives.get("reasoning", 0))
        self.cache_write_5m = int(directives.get("cache_write", 0))
        self.cache_write_1h = int(directives.get("cache_write_1h", 0))
        # An image costs tokens by its size, not its URL: OpenAI's high detail, 1024x1024, is
        # 85 + 170 x 4 tiles = 765 (platform.openai.com/docs/guides/images-vision, "Calculating costs").
        self.image_tokens = IMAGE_TOKENS * _image_parts(body.get("messages"))
        self.report_images = directives.get("image_details") == "1"
        self.audio_in = int(directives.get("audio_in", 0))
        self.prompt_tokens = max(1, len(text.split())) + self.image_tokens + self.audio_in
        # `n` completions are generated and billed: usage.completion_tokens counts every choice.
        n = body.get("n")
        self.choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1
        max_tokens = body.get("max_tokens") or body.get("max_output_tokens") or body.get("max_completion_tokens")
        self.completion_tokens = int(max_tokens) if max_tokens else DEFAULT_COMPLETION_TOKENS
        self.audio_out = min(int(directives.get("audio_out", 0)), self.completion_tokens)
        self.model = str(body.get("model", "fake-model"))
        self.stream = bool(body.get("stream"))

    def words(self) -> list[str]:
        return [f"w{i}" for i in range(self.completion_tokens)]

    def openai_usage(self) -> dict[str, Any]:
        completion = self.completion_tokens * self.choices
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "prompt_tokens_details": {
                "cached_tokens": self.cached_tokens,
                "audio_tokens": self.audio_in,
                **({"image_tokens": self.image_tokens} if self.report_images else {}),
            },
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens,
                "audio_tokens": self.audio_out * self.choices,
            },
        }


class FakeUpstream(ThreadedAioServer):
    """The server; start() runs it on a background thread with its own event loop."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.defaults: dict[str, Any] = {}
        self.calls: Counter[str] = Counter()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_post("/chat/completions", self.chat_completions)
        app.router.add_post("/v1/completions", self.text_completions)
        app.router.add_post("/completions", self.text_completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/embeddings", self.embeddings)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_post("/responses", self.responses)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/_control", self.control)
        app.router.add_get("/_stats", self.stats)
        return app

    # ---- helpers -------------------------------------------------------------------------

    async def _begin(self, request: web.Request) -> tuple[Scenario, web.Response | None]:
        body = await request.json()
        self.calls[request.path] += 1
        scenario = Scenario(body, self.defaults)
        if scenario.latency_s:
            await asyncio.sleep(scenario.latency_s)
        fault = scenario.fault
        if fault in ("400", "429", "500", "503"):
            status = int(fault)
            # Real providers quote the input in some errors; a gateway must not log it on.
            error = {
                "message": f"injected {status} for input: {scenario.text[:200]}",
                "type": "fake_error",
                "code": str(status),
            }
            headers = {"retry-after": "0"} if status == 429 else {}
            return scenario, web.json_response({"error": error}, status=status, headers=headers)
        if fault == "timeout":
            await asyncio.sleep(3600)
        return scenario, None

    async def _stream(
        self, request: web.Request, scenario: Scenario, events: list[dict[str, Any]], *, named: bool
    ) -> web.StreamResponse:
        """The scenario's events as a stream, paced and broken as its directives say."""
        return await self._sse(
            request,
            events,
            broken=scenario.fault == "broken_stream",
            named=named,
            first_token_s=scenario.first_token_s,
            chunk_s=scenario.chunk_s,
        )

    @staticmethod
    async def _sse(
        request: web.Request,
        events: list[dict[str, Any]],
        *,
        broken: bool,
        named: bool = False,
        first_token_s: float = 0,
        chunk_s: float = 0,
    ):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if first_token_s:
            await response.write(b": connected\n\n")  # an SSE comment: the headers go out now
        for index, event in enumerate(events):
            if index == 0 and first_token_s:
                await asyncio.sleep(first_token_s)  # a slow first token, the stream already open
            elif index and chunk_s:
                await asyncio.sleep(chunk_s)
            if broken and index == 2:
                # Drop the TCP connection mid-stream, as a crashed provider would.
                request.transport.close()  # type: ignore[union-attr]
                return response
            prefix = f"event: {event['type']}\n" if named else ""
            await response.write(f"{prefix}data: {json.dumps(event)}\n\n".encode())
        if not named:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    # ---- OpenAI-compatible endpoints -----------------------------------------------------

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        scenario, error = await self._begin(request)
        if error:
            return error
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if not scenario.stream:
            return web.json_response(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": scenario.model,
                    "choices": [
                        {
                            "index": index,
                            "message": {"role": "assistant", "content": " ".join(scenario.words())},
                            "finish_reason": "stop",
                        }
                        for index in range(scenario.choices)
                    ],
                    "usage": scenario.openai_usage(),
                }
            )

        def chunk(delta: dict[str, Any], finish: str | None = None, usage: dict | None = None) -> dict:
            choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
            out: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": scenario.model,
                "choices": choices,
            }
            if usage:
                out["usage"] = usage
            return out

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": word + " "}) for word in scenario.words()]
        events += [chunk({}, "stop"), chunk({}, usage=scenario.openai_usage())]
        return await self._stream(request, scenario, events, named=False)

    async def text_completions(self, request: web.Request) -> web.StreamResponse:
        scenario, error = await self._begin(request)
        if error:
            return error
        return web.json_response(
            {
                "id": f"cmpl-{uuid.uuid4().hex}",
                "object": "text_completion",
                "created": int(time.time()),
                "model": scenario.model,
                "choices": [
                    {"index": 0, "text": " ".join(scenario.words()), "finish_reason": "stop", "logprobs": None}
                ],
                "usage": scenario.openai_usage(),
            }
        )

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        scenario, error = await self._begin(request)
        if error:
            return error
        body_inputs = scenario.prompt_tokens
        return web.json_response(
            {
                "object": "list",
                "model": scenario.model,
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                "usage": {"prompt_tokens": body_inputs, "total_tokens": body_inputs},
            }
        )

    async def responses(self, request: web.Request) -> web.StreamResponse:
        scenario, error = await self._begin(request)
        if error:
            return error
        usage = {
            "input_tokens": scenario.prompt_tokens,
            "output_tokens": scenario.completion_tokens,
            "total_tokens": scenario.prompt_tokens + scenario.completion_tokens,
            "input_tokens_details": {"cached_tokens": scenario.cached_tokens},
            "output_tokens_details": {"reasoning_tokens": scenario.reasoning_tokens},
        }
        response = {
            "id": f"resp_{uuid.uuid4().hex}",
            "object": "response",
            "created_at": int(time.time()),
            "status": "completed",
            "model": scenario.model,
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{uuid.uuid4().hex}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": " ".join(scenario.words()), "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "usage": usage,
        }
        if not scenario.stream:
            return web.json_response(response)
        events = [
            {"type": "response.created", "response": {**response, "status": "in_progress", "output": []}},
            {"type": "response.output_text.delta", "delta": " ".join(scenario.words()), "output_index": 0},
            {"type": "response.completed", "response": response},
        ]
        return await self._stream(request, scenario, events, named=True)

    # ---- Anthropic-style endpoint --------------------------------------------------------

    async def messages(self, request: web.Request) -> web.StreamResponse:
        scenario, error = await self._begin(request)
        if error:
            return error
        mid = f"msg_{uuid.uuid4().hex}"
        text = " ".join(scenario.words())
        writes = scenario.cache_write_5m + scenario.cache_write_1h
        usage: dict[str, Any] = {
            "input_tokens": scenario.prompt_tokens - scenario.cached_tokens - writes,
            "output_tokens": scenario.completion_tokens,
            "cache_read_input_tokens": scenario.cached_tokens,
            "cache_creation_input_tokens": writes,
        }
        if writes:  # Anthropic splits cache writes by lifetime
            usage["cache_creation"] = {
                "ephemeral_5m_input_tokens": scenario.cache_write_5m,
                "ephemeral_1h_input_tokens": scenario.cache_write_1h,
            }
        if not scenario.stream:
            return web.json_response(
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": scenario.model,
                    "content": [{"type": "text", "text": text}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": usage,
                }
            )
        start_usage = {**usage, "output_tokens": 1}
        events = [
            {
                "type": "message_start",
                "message": {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": scenario.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            # One text delta per word, as the real API streams a few tokens per delta
            # (docs.anthropic.com/en/docs/build-with-claude/streaming, "Basic streaming request").
            *(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
                for piece in [word + " " for word in scenario.words()]
            ),
            {"type": "content_block_stop", "index": 0},
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": scenario.completion_tokens},
            },
            {"type": "message_stop"},
        ]
        return await self._stream(request, scenario, events, named=True)

    # ---- control -------------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

    async def control(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("reset"):
            self.defaults.clear()
            self.calls.clear()
        self.defaults.update({k: v for k, v in body.items() if k in ("latency_ms", "fault")})
        return web.json_response({"defaults": self.defaults})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": dict(self.calls), "total": sum(self.calls.values())})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--latency-ms", type=float, default=0)
    args = parser.parse_args()
    upstream = FakeUpstream(args.host, args.port)
    upstream.defaults["latency_ms"] = args.latency_ms
    web.run_app(upstream.app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()

"""A realistic load mix for headless runs against any BillingProxy URL.

    BP_TOKENS=sk-bp-a,sk-bp-b locust -f tests/load/locustfile.py --headless -u 50 -r 10 \
        -t 2m --host http://127.0.0.1:4000

``make load`` runs it against the ``make run`` stack (the demo token, BP_MODEL=demo, no
embeddings: the demo stack has no embedding model without an OpenAI key).
BP_MODEL is the chat model (gpt-4o-mini); BP_EMBEDDING_MODEL the embedding model
(text-embedding-3-small; empty: no embedding requests).

Several tenants (one token each, from BP_TOKENS), streaming and not, short and long completions,
embeddings, and a few requests that fail upstream (the fake upstream's fault directive; against a
real provider they are just short prompts).
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, task

TOKENS = [t for t in os.environ.get("BP_TOKENS", "").split(",") if t]
MODEL = os.environ.get("BP_MODEL", "gpt-4o-mini")
EMBEDDING_MODEL = os.environ.get("BP_EMBEDDING_MODEL", "text-embedding-3-small")


class Tenant(HttpUser):
    wait_time = between(0.05, 0.5)

    def on_start(self) -> None:
        if not TOKENS:
            raise RuntimeError("set BP_TOKENS to a comma-separated list of gateway tokens")
        self.client.headers["Authorization"] = f"Bearer {random.choice(TOKENS)}"

    def chat(self, content: str, max_tokens: int, stream: bool = False, name: str = "chat") -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
        if stream:
            body["stream"] = True
        with self.client.post("/v1/chat/completions", json=body, name=name, stream=stream, catch_response=True) as r:
            if stream:
                for _ in r.iter_lines():
                    pass
            if r.status_code == 200 or (name == "chat-error" and r.status_code >= 400):
                r.success()

    @task(10)
    def short_chat(self) -> None:
        self.chat("Say hello in five words.", 16)

    @task(4)
    def long_chat(self) -> None:
        self.chat("Write a long story about a lighthouse keeper. " * 20, 512)

    @task(5)
    def streamed_chat(self) -> None:
        self.chat("Stream me a short poem.", 64, stream=True, name="chat-stream")

    @task(2)
    def embedding(self) -> None:
        if EMBEDDING_MODEL:
            self.client.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": "embed me"})

    @task(1)
    def upstream_error(self) -> None:
        self.chat("[[fault:500]]", 8, name="chat-error")

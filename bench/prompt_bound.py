"""What the budget's prompt bound costs and how tight it is: the byte bound against the bound
counted with the model's own tokenizer (OpenAI models), per prompt size.

    python -m bench.prompt_bound --iterations 2000
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

from billingproxy.metering import prompt_token_bound
from billingproxy.metering.tokenizer import exact_counter, load_encodings

ENCODING = "o200k_base"  # gpt-4o, gpt-4o-mini
SENTENCE = "Please summarise the quarterly report and list the three largest cost drivers. "


def point_tiktoken_at_litellm() -> None:
    """LiteLLM ships tiktoken's files; the proxy points tiktoken at them when it imports LiteLLM."""
    spec = importlib.util.find_spec("litellm")
    if spec and spec.submodule_search_locations:
        folder = Path(next(iter(spec.submodule_search_locations))) / "litellm_core_utils" / "tokenizers"
        os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(folder))


def micros(function, iterations: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(iterations):
        function()
    return (time.perf_counter_ns() - started) / iterations / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    point_tiktoken_at_litellm()
    load_encodings({ENCODING})
    count = exact_counter(ENCODING)
    if count is None:
        raise SystemExit(f"{ENCODING} could not be loaded")
    print(f"{'prompt chars':>12} {'exact':>8} {'bytes bound':>12} {'counted':>8} {'bytes µs':>9} {'counted µs':>11}")
    for chars in (100, 1_000, 10_000, 16_000, 100_000):
        text = (SENTENCE * (chars // len(SENTENCE) + 1))[:chars]
        body = {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": text}]}
        exact = count(text) + count("You are terse.")
        iterations = max(10, args.iterations * 1_000 // max(chars, 1_000))
        by_bytes = prompt_token_bound(body)
        counted = prompt_token_bound(body, count=count)
        print(
            f"{chars:>12,} {exact:>8,} {by_bytes:>12,} {counted:>8,} "
            f"{micros(lambda b=body: prompt_token_bound(b), iterations):>9.1f} "
            f"{micros(lambda b=body: prompt_token_bound(b, count=count), iterations):>11.1f}"
        )


if __name__ == "__main__":
    main()

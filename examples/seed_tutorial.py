"""The prompt-caching tutorial's experiment, against promptcache instead of OpenAI.

A long instruction prefix (one paragraph repeated 200 times), then two different
questions; each call is timed and its usage printed. Only `base_url` and `api_key` differ
from the OpenAI version:

    make serve                                  # in one terminal
    .venv/bin/python examples/seed_tutorial.py  # in another
"""

from __future__ import annotations

import os
import time

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("PROMPTCACHE_BASE_URL", "http://127.0.0.1:8000/v1"),
    api_key=os.environ.get("PROMPTCACHE_API_KEY", "sk-local"),
)
MODEL = os.environ.get("PROMPTCACHE_MODEL", "smollm2-135m-instruct")

long_prefix = (
    "You are a helpful assistant specialized in machine learning. Explain concepts "
    "clearly, with one short example each. "
) * 200


def ask(question: str) -> None:
    start = time.perf_counter()
    response = client.responses.create(
        model=MODEL,
        instructions=long_prefix,
        input=question,
        max_output_tokens=64,
        prompt_cache_key="ml-tutor",
    )
    elapsed = time.perf_counter() - start
    usage = response.usage
    assert usage is not None
    print(f"Q: {question}")
    print(f"A: {response.output_text.strip()[:200]}")
    print(f"time: {elapsed:.2f} s")
    print(
        f"usage: input_tokens={usage.input_tokens} "
        f"cached_tokens={usage.input_tokens_details.cached_tokens} "
        f"output_tokens={usage.output_tokens}\n"
    )


if __name__ == "__main__":
    ask("What's overfitting in machine learning?")
    ask("What's regularization?")

"""Prompt text of a given length in tokens, and the seed experiment's instruction.

Token counts are measured with the served model's tokenizer, so they are exact for our
server and its peers on the same model and close for any other model.
"""

from __future__ import annotations

import random
import re
from typing import Any

SEED_PREFIX_TOKENS = 4616
SEED_QUESTIONS = (
    "What's overfitting in machine learning?",
    "What's regularization?",
    "What's a learning rate?",
    "What's cross-validation?",
    "What's a confusion matrix?",
    "What's gradient descent?",
    "What's a decision boundary?",
    "What's feature scaling?",
)
INSTRUCTION = (
    "You are a patient tutor for an introductory machine-learning course. Explain each idea "
    "in plain words first, then give one small worked example with numbers, then name one "
    "common mistake students make. Keep answers under two hundred words. "
)
_WORD = re.compile(r"^Ġ[a-z]{3,10}$")  # byte-level BPE: a space, then a lower-case word


def trimmed_text(tokenizer: Any, text: str, n_tokens: int) -> str:
    """`text` repeated and cut so that it encodes to exactly `n_tokens` tokens (or, if the
    tokenizer's merges never allow that, the nearest count below)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    ids = ids * (2 * n_tokens // len(ids) + 2)
    cut, best = n_tokens, ""
    for _ in range(50):  # decoding then re-encoding can merge tokens at the cut
        candidate = str(tokenizer.decode(ids[:cut]))
        got = len(tokenizer.encode(candidate, add_special_tokens=False))
        if got <= n_tokens and len(candidate) > len(best):
            best = candidate
        if got == n_tokens:
            break
        step = n_tokens - got
        cut += step if abs(step) > 1 else (1 if step > 0 else -1)
    return best


class WordSource:
    """Seeded random English-like words (whole-word tokens of the tokenizer's vocabulary)."""

    def __init__(self, tokenizer: Any, seed: int) -> None:
        vocab = sorted(t for t in tokenizer.get_vocab() if _WORD.match(t))
        if len(vocab) < 100:
            vocab = ["Ġ" + w for w in INSTRUCTION.lower().replace(".", "").split()]
        self._words = [w[1:] for w in vocab]
        self._rng = random.Random(seed)
        self._tokenizer = tokenizer

    def text(self, n_tokens: int, head: str = "") -> str:
        """`head` followed by random words, `n_tokens` tokens in all."""
        words = " ".join(self._rng.choice(self._words) for _ in range(n_tokens + 8))
        return trimmed_text(self._tokenizer, f"{head} {words}".strip(), n_tokens)

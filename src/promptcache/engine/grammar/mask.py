"""Apply each constrained sequence's grammar to its row of a step's logits, and advance it
by the token sampled.

One `Matcher` (an `xgr.GrammarMatcher`) per request. Before sampling, every constrained
row's allowed tokens are written into one bitmask for the batch and applied in place to
the logits (disallowed tokens become -inf), so greedy, temperature, top-k and top-p all
draw from the grammar's tokens only. Rows without a grammar are not touched, and a step
with none costs nothing.

Text the grammar forces (a call's opening, a property name) is written in the tokens the
tokenizer would encode it in: where the forced text encodes to two tokens or more, only
the first is allowed (the last stays free, as it may merge with what the model writes
next). Without this a model is steered through forced text one character at a time: more
steps, and an output whose tokens differ from its text's encoding.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import torch
import xgrammar as xgr

Encode = Callable[[str], list[int]]


class Advance(enum.Enum):
    GOING = "going"  # the token was accepted; more may follow
    DONE = "done"  # the token completed the grammar
    REJECTED = "rejected"  # the grammar cannot take the token (it can no longer finish)


class Matcher:
    """One request's position in its grammar."""

    def __init__(self, compiled: xgr.CompiledGrammar, encode: Encode) -> None:
        self._m = xgr.GrammarMatcher(compiled)
        self._encode = encode

    def fill(self, bitmask: torch.Tensor, row: int) -> int | None:
        """Write the allowed tokens into `bitmask[row]`; returns the one token allowed
        where forced text allows just one (the row is then left for the caller)."""
        self._m.fill_next_token_bitmask(bitmask, row)
        forced = self._m.find_jump_forward_string()
        ids = self._encode(forced) if forced else []
        if len(ids) < 2:
            return None
        word, bit = divmod(ids[0], 32)
        if not (int(bitmask[row, word]) >> bit) & 1:  # the tokenizer writes it otherwise
            return None
        return ids[0]

    def advance(self, token: int) -> Advance:
        if not self._m.accept_token(token):
            return Advance.REJECTED
        return Advance.DONE if self._m.is_terminated() else Advance.GOING

    @property
    def finished(self) -> bool:
        return bool(self._m.is_terminated())


def constrain(logits: torch.Tensor, matchers: list[Matcher | None]) -> None:
    """Mask row i of `logits` (N, V) by `matchers[i]`'s allowed tokens, where it has one."""
    rows = [i for i, m in enumerate(matchers) if m is not None and not m.finished]
    if not rows:
        return
    bitmask = xgr.allocate_token_bitmask(len(matchers), logits.shape[-1])
    masked = []
    for i in rows:
        matcher = matchers[i]
        assert matcher is not None
        token = matcher.fill(bitmask, i)
        if token is None:
            masked.append(i)
        else:  # one token: cheaper than applying a whole bitmask row
            kept = logits[i, token].clone()
            logits[i].fill_(float("-inf"))
            logits[i, token] = kept
    if masked:
        xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), indices=masked)

"""What happens to a step's logits between the model and the sampler, and what is read off
them after: `logit_bias`, presence and frequency penalties, and log probabilities.

Order, as OpenAI applies them: the grammar mask (engine/grammar/mask.py), then each row's
bias (added), then its penalties over the tokens it generated so far
(`logit -= frequency_penalty * count + presence_penalty * (count > 0)`), then sampling.
Bias and penalties are applied to the rows that have them, in one batched operation each;
a step where no row has any costs nothing.

Logprobs are of the distribution sampled from: log-softmax of the adjusted logits divided
by the temperature (a greedy row: by 1), before top-k/top-p truncation, so every token has
a finite value (a token the grammar forbids is -inf and is never listed). Prompt logprobs
(Completions' `echo` with `logprobs`) are the model's own: log-softmax of the raw logits.
Rows that ask for no logprobs are never log-softmaxed.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Protocol

import torch

from promptcache.engine.outputs import TokenLogprob
from promptcache.engine.sampling_params import SamplingParams

PROMPT_ROWS = 256  # prompt logprobs: rows turned into logits at a time (bounds memory)


@dataclass(slots=True)
class TokenCounts:
    """How often a sequence generated each token, kept up to date one step at a time."""

    counts: torch.Tensor  # (vocab,) float32
    counted: int = 0  # output tokens already added

    def update(self, output: list[int]) -> torch.Tensor:
        if self.counted < len(output):
            new = torch.tensor(output[self.counted :], device=self.counts.device)
            self.counts.index_add_(0, new, torch.ones_like(new, dtype=self.counts.dtype))
            self.counted = len(output)
        return self.counts


class Adjustable(Protocol):
    """What `adjust` reads of a sequence (the engine's `Sequence` has these)."""

    params: SamplingParams
    output_token_ids: list[int]
    counts: TokenCounts | None
    earlier_output: list[int]  # output of an earlier attempt, now in the prompt


def adjust(logits: torch.Tensor, seqs: Seq[Adjustable]) -> None:
    """Apply each row's `logit_bias` and penalties to `logits` (N, vocab) in place."""
    biased = [(i, s.params.logit_bias) for i, s in enumerate(seqs) if s.params.logit_bias]
    if biased:
        rows = [i for i, bias in biased for _ in bias]
        cols = [t for _, bias in biased for t, _ in bias]
        vals = [v for _, bias in biased for _, v in bias]
        dev = logits.device
        index = (torch.tensor(rows, device=dev), torch.tensor(cols, device=dev))
        logits.index_put_(index, torch.tensor(vals, device=dev, dtype=logits.dtype), True)
    penalized = [
        i
        for i, s in enumerate(seqs)
        if s.params.penalized and (s.output_token_ids or s.earlier_output)
    ]
    if not penalized:
        return
    counts = torch.stack([_counts(seqs[i], logits) for i in penalized])
    dev = logits.device
    freq = torch.tensor([seqs[i].params.frequency_penalty for i in penalized], device=dev)
    pres = torch.tensor([seqs[i].params.presence_penalty for i in penalized], device=dev)
    rows_t = torch.tensor(penalized, device=dev)
    penalty = counts * freq[:, None] + (counts > 0).to(logits.dtype) * pres[:, None]
    logits.index_copy_(0, rows_t, logits.index_select(0, rows_t) - penalty)


def _counts(seq: Adjustable, logits: torch.Tensor) -> torch.Tensor:
    if seq.counts is None:
        seq.counts = TokenCounts(torch.zeros(logits.shape[-1], device=logits.device))
        if seq.earlier_output:  # a resumed request's earlier output counts as output
            seq.counts.update(seq.earlier_output)
            seq.counts.counted = 0
    return seq.counts.update(seq.output_token_ids)


def token_logprobs(
    logits: torch.Tensor, params: Seq[SamplingParams], tokens: list[int]
) -> list[TokenLogprob | None]:
    """The logprob of each row's sampled token and its top `params.logprobs` (None for a
    row that asks for none)."""
    rows = [i for i, p in enumerate(params) if p.logprobs is not None]
    out: list[TokenLogprob | None] = [None] * len(params)
    if not rows:
        return out
    dev = logits.device
    temps = [1.0 if params[i].greedy else params[i].temperature for i in rows]
    scaled = logits  # every row at temperature 1 (greedy): no copy
    if len(rows) < len(params):
        scaled = logits.index_select(0, torch.tensor(rows, device=dev))
    if any(t != 1.0 for t in temps):
        scaled = scaled / torch.tensor(temps, device=dev, dtype=scaled.dtype)[:, None]
    chosen = torch.tensor([tokens[i] for i in rows], device=dev)
    ks = [params[i].logprobs or 0 for i in rows]
    for i, entry in zip(rows, _read(scaled, chosen, max(ks), ks), strict=True):
        out[i] = entry
    return out


def _read(logits: torch.Tensor, chosen: torch.Tensor, k: int, ks: list[int]) -> list[TokenLogprob]:
    """Log-softmax `logits` (R, vocab); each row's `chosen` token and top `ks[r]` (<= k)."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    picked = lp.gather(1, chosen[:, None])[:, 0].tolist()
    top_v: list[list[float]] = [[] for _ in ks]
    top_i: list[list[int]] = [[] for _ in ks]
    if k:
        values, ids = lp.topk(min(k, lp.shape[-1]), dim=-1)
        top_v, top_i = values.tolist(), ids.tolist()
    ids_list = chosen.tolist()
    return [
        TokenLogprob(
            ids_list[r],
            picked[r],
            tuple(
                (t, v)
                for t, v in zip(top_i[r][: ks[r]], top_v[r][: ks[r]], strict=True)
                if v > -1e30
            ),
        )
        for r in range(len(ks))
    ]


def prompt_logprobs(
    hidden: torch.Tensor,
    compute_logits: Callable[[torch.Tensor], torch.Tensor],
    targets: list[int],
    k: int,
) -> list[TokenLogprob]:
    """Logprobs of `targets` (the prompt tokens each row of `hidden` predicts), with the
    top `k`, from the model's raw logits, `PROMPT_ROWS` rows at a time."""
    out: list[TokenLogprob] = []
    for start in range(0, len(targets), PROMPT_ROWS):
        part = hidden[start : start + PROMPT_ROWS]
        chosen = torch.tensor(targets[start : start + PROMPT_ROWS], device=hidden.device)
        logits = compute_logits(part)
        out.extend(_read(logits, chosen, k, [k] * len(chosen)))
    return out

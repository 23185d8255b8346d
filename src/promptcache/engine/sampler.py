"""Turn the logits of sampled rows into next tokens: greedy, temperature, top-k and top-p.

Each sequence draws from its own `torch.Generator`, so a seeded request gives the same
tokens whatever it is batched with. A sampled token is exactly one `multinomial` draw over
the whole vocabulary (filtered tokens get probability 0, never a shorter row), and such a
draw advances the generator by the same amount whatever the probabilities: so a request
resumed at output position k (`skip_draws`) continues the same random stream exactly.
"""

from __future__ import annotations

import torch

from promptcache.engine.sampling_params import SamplingParams


def sample(
    logits: torch.Tensor,
    params: list[SamplingParams],
    generators: list[torch.Generator | None],
) -> list[int]:
    """logits (N, V) float32 -> one token id per row."""
    greedy = logits.argmax(dim=-1).tolist()
    out: list[int] = []
    for i, p in enumerate(params):
        if p.greedy:
            out.append(int(greedy[i]))
        else:
            out.append(_sample_row(logits[i], p, generators[i]))
    return out


def skip_draws(gen: torch.Generator, n: int, vocab: int) -> None:
    """Advance `gen` past `n` draws as `_sample_row` makes them over `vocab` tokens."""
    ones = torch.ones(vocab, dtype=torch.float32, device=gen.device)
    for _ in range(n):
        torch.multinomial(ones, 1, generator=gen)


def _sample_row(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> int:
    logits = logits.float()
    if 0 < p.top_k < logits.shape[-1]:
        kth = torch.topk(logits, p.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    # Shifted so the largest is 0: a tiny temperature then sends the others to -inf (a
    # one-hot distribution), never inf - inf = nan.
    probs = torch.softmax((logits - logits.max()) / p.temperature, dim=-1)
    if p.top_p < 1.0:
        probs = _top_p(probs, p.top_p)
    if gen is not None and gen.device != probs.device:
        probs = probs.to(gen.device)
    return int(torch.multinomial(probs, 1, generator=gen).item())


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches `top_p`."""
    sorted_probs, order = probs.sort(descending=True)
    before = sorted_probs.cumsum(-1) - sorted_probs  # mass of strictly more likely tokens
    drop = before >= top_p
    drop[..., 0] = False  # the most likely token always stays (top_p 5e-324 is 0 in float32)
    sorted_probs[drop] = 0.0
    kept = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return kept / kept.sum()

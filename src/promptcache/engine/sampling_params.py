"""What a request asks of generation: length, randomness, seed and stop conditions."""

from __future__ import annotations

from dataclasses import dataclass

GREEDY_BELOW = 1e-5  # temperatures below this sample the argmax
MAX_LOGPROBS = 20  # top logprobs per position at most (OpenAI's Chat limit)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request generation settings.

    Attributes:
        max_tokens: most tokens to generate; None = up to the model's context length.
        temperature: 0 means greedy (argmax), and so does anything below
            `GREEDY_BELOW` (1e-5: in float32 a smaller one is the argmax, or 0); otherwise
            logits are divided by it.
        top_p: nucleus sampling mass in (0, 1]; 1 keeps every token.
        top_k: sample only among the k most likely tokens; 0 keeps every token.
        seed: seeds this request's own random generator, so its samples do not depend on
            what else is batched with it. None draws a fresh seed.
        stop: strings that end generation; the returned text stops before them.
        stop_token_ids: extra token ids that end generation (the model's EOS always does,
            unless ignore_eos).
        ignore_eos: keep generating past EOS (benchmarks use it for fixed-length outputs).
        presence_penalty: subtracted from the logit of every token generated so far
            (-2..2; 0 is off).
        frequency_penalty: subtracted once per time a token was generated so far (-2..2).
        logit_bias: (token id, bias) pairs added to the logits (-100..100 each).
        logprobs: None computes none; k >= 0 reports each sampled token's logprob and the
            k most likely at its step (engine/logits.py says of which distribution).
        prompt_logprobs: None computes none; k >= 0 reports every prompt token's logprob
            (after the first) and the k most likely there. The request then reads nothing
            from the prefix cache (every prompt token must be computed); it still writes.
    """

    max_tokens: int | None = 256
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()
    logprobs: int | None = None
    prompt_logprobs: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if any(not s for s in self.stop):
            raise ValueError("stop strings must not be empty")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise ValueError(f"{name} must be in [-2, 2], got {getattr(self, name)}")
        if any(not -100 <= b <= 100 or t < 0 for t, b in self.logit_bias):
            raise ValueError("logit_bias: token ids >= 0, biases in [-100, 100]")
        for name in ("logprobs", "prompt_logprobs"):
            k = getattr(self, name)
            if k is not None and not 0 <= k <= MAX_LOGPROBS:
                raise ValueError(f"{name} must be in [0, {MAX_LOGPROBS}], got {k}")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW

    @property
    def penalized(self) -> bool:
        return bool(self.presence_penalty or self.frequency_penalty)

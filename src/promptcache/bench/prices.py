"""Price table for the bench's cost figures: USD per million tokens.

Defaults are OpenAI's list prices (standard tier) for input, cached input and output.
`--price-model` picks a row; `--prices IN,CACHED,OUT` overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens."""

    input: float
    cached_input: float
    output: float

    @classmethod
    def parse(cls, text: str) -> Price:
        """'IN,CACHED,OUT' (USD per 1M tokens); CACHED may be empty = 10 % of IN."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 3:
            raise ValueError(f"--prices wants IN,CACHED,OUT (USD per 1M tokens), got {text!r}")
        inp, out = float(parts[0]), float(parts[2])
        cached = float(parts[1]) if parts[1] else inp / 10
        return cls(inp, cached, out)


OPENAI_PRICES: dict[str, Price] = {
    "gpt-5": Price(1.25, 0.125, 10.00),
    "gpt-5-mini": Price(0.25, 0.025, 2.00),
    "gpt-5-nano": Price(0.05, 0.005, 0.40),
    "gpt-4.1": Price(2.00, 0.50, 8.00),
    "gpt-4.1-mini": Price(0.40, 0.10, 1.60),
    "gpt-4.1-nano": Price(0.10, 0.025, 0.40),
    "gpt-4o": Price(2.50, 1.25, 10.00),
    "gpt-4o-mini": Price(0.15, 0.075, 0.60),
}
DEFAULT_PRICE_MODEL = "gpt-5-mini"  # a 90 % cached-input discount, as OpenAI bills it


def price_for(model: str, price_model: str | None, override: str | None) -> tuple[str, Price]:
    """The price row to use: an override, the named row, the served model's own row (when it
    is an OpenAI model), else the default row. Returns (label, price)."""
    if override:
        return "custom", Price.parse(override)
    name = price_model or (model if model in OPENAI_PRICES else DEFAULT_PRICE_MODEL)
    if name not in OPENAI_PRICES:
        known = ", ".join(OPENAI_PRICES)
        raise ValueError(f"unknown --price-model {name!r}; known: {known}")
    return name, OPENAI_PRICES[name]

"""Prices per model, USD per million tokens, and what a request costs with and without the
cache.

Built-in rows are OpenAI's and Anthropic's list prices (standard tier). A served model
without a row of its own is priced as `price_model` (default `gpt-5-mini`) on the OpenAI
endpoints and as `anthropic_price_model` (default `claude-sonnet-4-5`) on `/v1/messages`.
The config file can add or replace rows (`[prices."MODEL"]` with `input`, `cached_input`,
`cache_write`, `cache_write_1h`, `output`); `cached_input` defaults to 10 % of `input` (a
90 % discount), `cache_write` to `input` (OpenAI bills writes as ordinary input) and
`cache_write_1h` (writes kept an hour or more) to `cache_write`. Anthropic's rows bill
writes at 1.25 × input (5 minutes) and 2 × input (1 hour), reads at 0.1 ×.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens. `cache_write` None = the input price; `cache_write_1h` None =
    the `cache_write` price."""

    input: float
    cached_input: float
    output: float
    cache_write: float | None = None
    cache_write_1h: float | None = None

    @property
    def write(self) -> float:
        return self.input if self.cache_write is None else self.cache_write

    @property
    def write_long(self) -> float:
        return self.write if self.cache_write_1h is None else self.cache_write_1h

    @classmethod
    def parse(cls, text: str) -> Price:
        """'IN,CACHED,OUT' (USD per 1M tokens); CACHED may be empty = 10 % of IN."""
        parts = [p.strip() for p in text.split(",")]
        if len(parts) != 3:
            raise ValueError(f"--prices wants IN,CACHED,OUT (USD per 1M tokens), got {text!r}")
        inp, out = float(parts[0]), float(parts[2])
        cached = float(parts[1]) if parts[1] else inp / 10
        return cls(inp, cached, out)

    @classmethod
    def from_table(cls, name: str, table: Mapping[str, Any]) -> Price:
        """A `[prices."NAME"]` table of the config file."""
        known = {"input", "cached_input", "cache_write", "cache_write_1h", "output"}
        unknown = set(table) - known
        if unknown or "input" not in table or "output" not in table:
            raise ValueError(
                f"[prices.{name!r}] needs input and output (and may set cached_input, "
                f"cache_write, cache_write_1h), USD per 1M tokens; unknown: {sorted(unknown)}"
            )
        inp = float(table["input"])
        cached = float(table.get("cached_input", inp / 10))
        write, write_1h = table.get("cache_write"), table.get("cache_write_1h")
        return cls(
            inp,
            cached,
            float(table["output"]),
            None if write is None else float(write),
            None if write_1h is None else float(write_1h),
        )

    def cost(
        self, prompt: int, cached: int, cache_write: int, output: int, write_long: int = 0
    ) -> float:
        """USD as billed with the cache: cached input at its price, writes at theirs
        (`write_long` of them, kept an hour or more, at the 1-hour write price)."""
        plain = prompt - cached - cache_write
        return (
            plain * self.input
            + cached * self.cached_input
            + (cache_write - write_long) * self.write
            + write_long * self.write_long
            + output * self.output
        ) / 1e6

    def cost_without_cache(self, prompt: int, output: int) -> float:
        """USD if every prompt token were billed as ordinary input."""
        return (prompt * self.input + output * self.output) / 1e6


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


def _anthropic(inp: float, out: float) -> Price:
    """Anthropic's rule: reads 0.1 ×, 5-minute writes 1.25 ×, 1-hour writes 2 × input."""
    return Price(inp, inp * 0.1, out, inp * 1.25, inp * 2)


ANTHROPIC_PRICES: dict[str, Price] = {
    "claude-opus-4-5": _anthropic(5.00, 25.00),
    "claude-sonnet-4-5": _anthropic(3.00, 15.00),
    "claude-haiku-4-5": _anthropic(1.00, 5.00),
}
DEFAULT_ANTHROPIC_PRICE_MODEL = "claude-sonnet-4-5"


class PriceTable:
    """Rows by model name: the built-in ones plus the config file's."""

    def __init__(self, extra: Mapping[str, Price] | None = None) -> None:
        self.rows: dict[str, Price] = {**OPENAI_PRICES, **ANTHROPIC_PRICES, **(extra or {})}

    @classmethod
    def from_config(cls, tables: Mapping[str, Any]) -> PriceTable:
        """From the config file's `[prices]` table (one sub-table per model)."""
        rows = {}
        for name, table in tables.items():
            if not isinstance(table, Mapping):
                raise ValueError(f"[prices] wants one table per model, got {name} = {table!r}")
            rows[name] = Price.from_table(name, table)
        return cls(rows)

    def for_model(self, model: str, fallback: str = DEFAULT_PRICE_MODEL) -> tuple[str, Price]:
        """The model's own row, else the fallback row. Returns (row name, price)."""
        name = model if model in self.rows else fallback
        if name not in self.rows:
            raise ValueError(f"no price row {name!r}; known: {', '.join(sorted(self.rows))}")
        return name, self.rows[name]


def price_for(model: str, price_model: str | None, override: str | None) -> tuple[str, Price]:
    """The bench's price row: an override, the named row, the served model's own row (when
    it is an OpenAI model), else the default row. Returns (label, price)."""
    if override:
        return "custom", Price.parse(override)
    name = price_model or (model if model in OPENAI_PRICES else DEFAULT_PRICE_MODEL)
    if name not in OPENAI_PRICES:
        known = ", ".join(OPENAI_PRICES)
        raise ValueError(f"unknown --price-model {name!r}; known: {known}")
    return name, OPENAI_PRICES[name]

"""The bench's workloads: seeded, reproducible sessions of chat requests.

A session is what one simulated user sends, one request after another. Single-turn
workloads (seed, shared-prefix, no-reuse) are sessions of one request; multi-turn sessions
carry their growing history (earlier questions and the server's real answers).

    seed           one instruction prefix (the hands-on tutorial's), different questions
    shared-prefix  G groups x P prompts: a shared S-token system prompt + a Q-token question
    multi-turn     U users x R rounds: a shared system prompt + growing history
    no-reuse       unique prompts: the control, nothing to hit
    long-tail      N distinct long prefixes, each revisited R times round-robin, so with
                   N x S tokens well above the KV pool a prefix returns after the pool has
                   turned over (send it with `--retention 24h` to exercise slower tiers)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from promptcache.bench.text import (
    INSTRUCTION,
    SEED_PREFIX_TOKENS,
    SEED_QUESTIONS,
    WordSource,
    trimmed_text,
)

WorkloadName = Literal["seed", "shared-prefix", "multi-turn", "no-reuse", "long-tail"]
WORKLOADS: tuple[WorkloadName, ...] = (
    "seed",
    "shared-prefix",
    "multi-turn",
    "no-reuse",
    "long-tail",
)
Order = Literal["interleaved", "grouped"]


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """Sizes of a workload, in prompts and tokens. `for_name` fills each workload's defaults."""

    name: WorkloadName
    num_prompts: int = 4  # seed, no-reuse
    groups: int = 64  # shared-prefix
    prompts_per_group: int = 16
    order: Order = "interleaved"
    users: int = 8  # multi-turn
    rounds: int = 4
    system_tokens: int = 2048
    system_tokens_max: int | None = None  # shared-prefix: group sizes spread up to this
    question_tokens: int = 128
    output_tokens: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        top = self.system_tokens_max
        if top is not None and top < self.system_tokens:
            raise ValueError(f"system_tokens_max {top} is below system_tokens {self.system_tokens}")

    @classmethod
    def for_name(cls, name: WorkloadName, small: bool = False, **overrides: Any) -> WorkloadSpec:
        """Defaults of `name` (SGLang's generated-shared-prefix sizes for shared-prefix;
        `small` = a preset that fits a 2-core CPU), then `overrides` (None = keep)."""
        fields: dict[str, Any] = {**DEFAULTS[name], **(SMALL[name] if small else {})}
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(name=name, **fields)


DEFAULTS: dict[WorkloadName, dict[str, Any]] = {
    "seed": {"num_prompts": 4, "system_tokens": SEED_PREFIX_TOKENS, "output_tokens": 32},
    "shared-prefix": {
        "groups": 64,
        "prompts_per_group": 16,
        "system_tokens": 2048,
        "question_tokens": 128,
        "output_tokens": 256,
    },
    "multi-turn": {
        "users": 8,
        "rounds": 4,
        "system_tokens": 1024,
        "question_tokens": 64,
        "output_tokens": 64,
    },
    "no-reuse": {
        "num_prompts": 16,
        "system_tokens": 1024,
        "question_tokens": 128,
        "output_tokens": 64,
    },
    "long-tail": {
        "num_prompts": 32,
        "rounds": 3,
        "system_tokens": 4096,
        "question_tokens": 64,
        "output_tokens": 32,
    },
}
SMALL: dict[WorkloadName, dict[str, Any]] = {
    "seed": {},
    "shared-prefix": {
        "groups": 4,
        "prompts_per_group": 4,
        "system_tokens": 1024,
        "question_tokens": 64,
        "output_tokens": 32,
    },
    "multi-turn": {"users": 4, "rounds": 3, "question_tokens": 32, "output_tokens": 32},
    "no-reuse": {"num_prompts": 8, "question_tokens": 64, "output_tokens": 32},
    "long-tail": {
        "num_prompts": 6,
        "rounds": 2,
        "system_tokens": 1024,
        "question_tokens": 32,
        "output_tokens": 16,
    },
}


@dataclass(frozen=True, slots=True)
class Session:
    """Requests one user sends in order; with `keep_history`, round r carries rounds < r."""

    id: int
    tag: str
    system: str
    questions: tuple[str, ...]
    max_tokens: int
    keep_history: bool = False

    def messages(self, round_: int, answers: list[str]) -> list[dict[str, str]]:
        """Chat messages of round `round_`, given the answers to the earlier rounds."""
        msgs = [{"role": "system", "content": self.system}]
        if self.keep_history:
            for q, a in zip(self.questions[:round_], answers, strict=True):
                msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        msgs.append({"role": "user", "content": self.questions[round_]})
        return msgs


def build_sessions(spec: WorkloadSpec, tokenizer: Any) -> list[Session]:
    """The sessions of `spec`, in the order they are sent."""
    words = WordSource(tokenizer, spec.seed)
    if spec.name == "seed":
        return _seed(spec, tokenizer)
    if spec.name == "shared-prefix":
        return _shared_prefix(spec, words)
    if spec.name == "multi-turn":
        return _multi_turn(spec, words)
    if spec.name == "long-tail":
        return _long_tail(spec, words)
    return _no_reuse(spec, words)


def _long_tail(spec: WorkloadSpec, words: WordSource) -> list[Session]:
    """Prefix 0, 1, …, N-1, then again: each visit a new question on an old prefix."""
    prefixes = [words.text(spec.system_tokens, f"Document {i}.") for i in range(spec.num_prompts)]
    visits = [(i, r) for r in range(spec.rounds) for i in range(spec.num_prompts)]
    return _on_prefixes(spec, words, prefixes, visits, "p{}/v{}", "Visit {1}:")


def _seed(spec: WorkloadSpec, tokenizer: Any) -> list[Session]:
    prefix = trimmed_text(tokenizer, INSTRUCTION, spec.system_tokens)
    return [
        Session(i, f"q{i}", prefix, (SEED_QUESTIONS[i % len(SEED_QUESTIONS)],), spec.output_tokens)
        for i in range(spec.num_prompts)
    ]


def group_system_tokens(spec: WorkloadSpec) -> list[int]:
    """Each shared-prefix group's system prompt size: `system_tokens` for all, or spread
    evenly from `system_tokens` to `system_tokens_max` across the groups."""
    top = spec.system_tokens_max
    if top is None or spec.groups == 1:
        return [spec.system_tokens] * spec.groups
    step = (top - spec.system_tokens) / (spec.groups - 1)
    return [round(spec.system_tokens + g * step) for g in range(spec.groups)]


def _shared_prefix(spec: WorkloadSpec, words: WordSource) -> list[Session]:
    systems = [words.text(n, f"Group {g}.") for g, n in enumerate(group_system_tokens(spec))]
    pairs = [(g, p) for g in range(spec.groups) for p in range(spec.prompts_per_group)]
    if spec.order == "interleaved":  # g0p0, g1p0, ..., g0p1, g1p1, ...
        pairs.sort(key=lambda gp: (gp[1], gp[0]))
    return _on_prefixes(spec, words, systems, pairs, "g{}/p{}", "Question {1}:")


def _on_prefixes(
    spec: WorkloadSpec,
    words: WordSource,
    systems: list[str],
    pairs: list[tuple[int, int]],
    tag: str,
    label: str,
) -> list[Session]:
    """One single-request session per (prefix, n) pair, in order: that system prompt and a
    fresh question (`tag` and `label` are formatted with the pair)."""
    return [
        Session(
            i,
            tag.format(k, n),
            systems[k],
            (words.text(spec.question_tokens, label.format(k, n)),),
            spec.output_tokens,
        )
        for i, (k, n) in enumerate(pairs)
    ]


def _multi_turn(spec: WorkloadSpec, words: WordSource) -> list[Session]:
    system = words.text(spec.system_tokens, "Shared system prompt.")
    return [
        Session(
            u,
            f"u{u}",
            system,
            tuple(
                words.text(spec.question_tokens, f"User {u}, round {r}:")
                for r in range(spec.rounds)
            ),
            spec.output_tokens,
            keep_history=True,
        )
        for u in range(spec.users)
    ]


def _no_reuse(spec: WorkloadSpec, words: WordSource) -> list[Session]:
    return [
        Session(
            i,
            f"n{i}",
            words.text(spec.system_tokens, f"Prompt {i}."),
            (words.text(spec.question_tokens, "Question:"),),
            spec.output_tokens,
        )
        for i in range(spec.num_prompts)
    ]


# The sizes each workload uses, in the order its one-line description names them.
_SIZES_USED: dict[WorkloadName, tuple[str, ...]] = {
    "seed": ("num_prompts", "system_tokens", "output_tokens"),
    "shared-prefix": (
        "groups",
        "prompts_per_group",
        "order",
        "system_tokens",
        "system_tokens_max",
        "question_tokens",
        "output_tokens",
    ),
    "multi-turn": ("users", "rounds", "system_tokens", "question_tokens", "output_tokens"),
    "no-reuse": ("num_prompts", "system_tokens", "question_tokens", "output_tokens"),
    "long-tail": ("num_prompts", "rounds", "system_tokens", "question_tokens", "output_tokens"),
}


def describe(spec: WorkloadSpec) -> str:
    """One line naming the workload's sizes."""
    values = ((n, getattr(spec, n)) for n in _SIZES_USED[spec.name])
    sizes = ", ".join(f"{n}={v}" for n, v in values if v is not None)
    return f"{spec.name} ({sizes}; seed={spec.seed})"

"""Text that changes from one request to the next — timestamps, dates, UUIDs, random ids,
counters — found by pattern. Such content at the start of a prompt defeats prefix caching;
the diagnosis and `promptcache lint` flag it."""

from __future__ import annotations

import re
from dataclasses import dataclass

# Most specific first: a span claimed by one kind is not reported again as a later kind.
PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "timestamp",
        re.compile(
            r"\b\d{4}-\d{2}-\d{2}[T ]\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?"
        ),
    ),
    (
        "uuid",
        re.compile(
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
        ),
    ),
    ("date", re.compile(r"\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b")),
    ("time", re.compile(r"\b\d{1,2}:\d{2}(?::\d{2})?(?:\s?[AaPp][Mm])?\b")),
    ("unix time", re.compile(r"\b1[5-9]\d{8}(?:\d{3})?\b")),
    (
        "random id",
        re.compile(r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{16,}\b"),
    ),
    ("number", re.compile(r"\b\d+\b")),
)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    text: str
    start: int  # character offset in the scanned text


def find_dynamic(text: str) -> list[Finding]:
    """Every dynamic-looking span of `text`, in order, each claimed by its first kind."""
    taken: list[tuple[int, int]] = []
    found: list[Finding] = []
    for kind, pattern in PATTERNS:
        for m in pattern.finditer(text):
            if any(m.start() < end and start < m.end() for start, end in taken):
                continue
            taken.append((m.start(), m.end()))
            found.append(Finding(kind, m.group(0), m.start()))
    return sorted(found, key=lambda f: f.start)


def changed_kinds(this: str, earlier: str) -> list[str]:
    """Kinds of dynamic content whose text differs between two windows of two prompts
    (what most likely made them diverge); the kinds in `this` when none differ."""
    a, b = find_dynamic(this), find_dynamic(earlier)
    before = {(f.kind, f.text) for f in b}
    changed = [f.kind for f in a if (f.kind, f.text) not in before]
    kinds = changed or [f.kind for f in a]
    return list(dict.fromkeys(kinds))

"""What one request saw: timings of its stream, its usage, or the kind of error it met."""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class RequestRecord:
    """One request. Times are seconds since the run started (`start`, `chunk_times`, `end`)."""

    session: int
    round: int
    tag: str
    start: float
    end: float = 0.0
    chunk_times: list[float] = field(default_factory=list)  # each streamed content chunk
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    usage_reported: bool = False  # False: the server sent no usage (counts are estimates)
    streaming: bool = False  # the response began (status and headers received)
    finish_reason: str | None = None
    error: str | None = None  # kind: connection, timeout, http_<status>, dropped, stream_error
    error_detail: str | None = None
    text: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ttft(self) -> float | None:
        return self.chunk_times[0] - self.start if self.chunk_times else None

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def inter_token(self) -> list[float]:
        t = self.chunk_times
        return [b - a for a, b in itertools.pairwise(t)]

    @property
    def cached_fraction(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "ttft": self.ttft, "latency": self.latency}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RequestRecord:
        return cls(**{k: v for k, v in d.items() if k not in ("ttft", "latency")})

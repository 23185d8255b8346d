"""The routing policy: which worker runs a request, and which to try next if it fails.

    bucket = sha256(tenant | first `route_prefix_tokens` prompt tokens | prompt_cache_key)

`cache-aware` (the default), after OpenAI's routing:

1. **Home.** Rendezvous (highest-random-weight) hashing ranks the healthy workers for the
   bucket: score(worker) = sha256(bucket | worker name). The top one is the bucket's home.
   Adding or removing a worker moves only the buckets whose top worker changed.
2. **Overflow.** Each bucket keeps a sliding window (`window_s`, 60 s) of where its
   requests went. While the window holds more than `overflow_rpm` (15) requests, the
   bucket spreads over the first ceil(count / overflow_rpm) workers of its order, each new
   request going to the one of those that got the fewest of the window's requests (earlier
   in the order on a tie): a hot prefix uses as few workers as its rate needs.
3. **Load bound.** A chosen worker whose in-flight requests exceed the least-loaded
   healthy worker's by more than `load_abs_threshold` (8) *and* are more than
   `load_rel_threshold` (1.5) times them is skipped for the next in the order, so
   affinity never piles a queue on one worker. (sglang-router uses 32 / 1.5 for GPU
   workers with large batches; a CPU worker runs at most `max_num_seqs` = 16 at once, so
   8 in-flight over the least loaded is already a queue.)

`round-robin` and `least-loaded` ignore the prompt: they are the benchmark's baselines.
Every decision returns the full attempt order: the chosen worker first, then the others in
the bucket's order (failover).
"""

from __future__ import annotations

import enum
import hashlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from promptcache.config import RouterConfig

MAX_BUCKETS = 100_000  # windows kept (least recently used dropped beyond)


class Decision(enum.Enum):
    HOME = "home"  # the bucket's first worker
    OVERFLOW = "overflow"  # a later worker of the bucket's order: the bucket is hot
    LOAD_SKIP = "load_skip"  # the chosen worker was too loaded: the next in order
    FAILOVER = "failover"  # an earlier attempt failed
    ROUND_ROBIN = "round_robin"
    LEAST_LOADED = "least_loaded"


@dataclass(frozen=True, slots=True)
class Candidate:
    """A healthy worker as the policy sees it."""

    name: str
    in_flight: int


@dataclass(frozen=True, slots=True)
class Route:
    order: list[str]  # worker names: the chosen one first, then the failover order
    decision: Decision
    bucket: bytes


def bucket_of(tenant: str | None, token_ids: Sequence[int], prefix: int, key: str | None) -> bytes:
    """The routing bucket: tenant, the first `prefix` prompt tokens, `prompt_cache_key`."""
    h = hashlib.sha256(b"promptcache-route/1")
    for part in (tenant or "", key or ""):
        data = part.encode()
        h.update(len(data).to_bytes(4, "little") + data)
    for t in token_ids[:prefix]:
        h.update(int(t).to_bytes(4, "little"))
    return h.digest()


def rendezvous(bucket: bytes, names: Sequence[str]) -> list[str]:
    """`names` ranked by highest random weight for `bucket` (stable across processes)."""

    def score(name: str) -> bytes:
        return hashlib.sha256(bucket + b"|" + name.encode()).digest()

    return sorted(names, key=score, reverse=True)


class RoutingPolicy:
    """Decides routes; keeps the per-bucket windows (one thread: the router's event loop)."""

    def __init__(self, config: RouterConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._windows: OrderedDict[bytes, deque[tuple[float, str]]] = OrderedDict()
        self._turn = 0

    @property
    def buckets_tracked(self) -> int:
        return len(self._windows)

    def route(self, bucket: bytes, healthy: Sequence[Candidate]) -> Route:
        if not healthy:
            raise ValueError("no healthy worker")
        policy = self.config.policy
        if policy == "round-robin":
            self._turn += 1
            names = [c.name for c in healthy]
            k = self._turn % len(names)
            return Route(names[k:] + names[:k], Decision.ROUND_ROBIN, bucket)
        if policy == "least-loaded":
            ranked = sorted(healthy, key=lambda c: c.in_flight)
            return Route([c.name for c in ranked], Decision.LEAST_LOADED, bucket)
        return self._cache_aware(bucket, healthy)

    def _cache_aware(self, bucket: bytes, healthy: Sequence[Candidate]) -> Route:
        order = rendezvous(bucket, [c.name for c in healthy])
        window = self._window(bucket)
        need = max(1, math.ceil((len(window) + 1) / self.config.overflow_rpm))
        sent = {name: 0 for name in order}
        for _, name in window:
            if name in sent:
                sent[name] += 1
        spread = order[: min(need, len(order))]
        pick = min(spread, key=lambda n: (sent[n], order.index(n)))
        decision = Decision.HOME if pick == order[0] else Decision.OVERFLOW
        loads = {c.name: c.in_flight for c in healthy}
        if self._overloaded(loads[pick], min(loads.values())):
            fit = [n for n in order if not self._overloaded(loads[n], min(loads.values()))]
            pick, decision = fit[0], Decision.LOAD_SKIP
        window.append((self.clock(), pick))
        return Route([pick] + [n for n in order if n != pick], decision, bucket)

    def _overloaded(self, load: int, least: int) -> bool:
        c = self.config
        return load - least > c.load_abs_threshold and load > c.load_rel_threshold * least

    def _window(self, bucket: bytes) -> deque[tuple[float, str]]:
        window = self._windows.pop(bucket, None)
        if window is None:
            window = deque()
        horizon = self.clock() - self.config.overflow_window_s
        while window and window[0][0] <= horizon:
            window.popleft()
        self._windows[bucket] = window  # most recently used last
        while len(self._windows) > MAX_BUCKETS:
            self._windows.popitem(last=False)
        return window

"""The routing policy: which worker runs a request, and which to try next if it fails.

    bucket = sha256(tenant | first `route_prefix_tokens` prompt tokens | prompt_cache_key)

`cache-aware` (the default), after OpenAI's routing:

1. **Home.** Rendezvous (highest-random-weight) hashing ranks the healthy workers for the
   bucket: score(worker) = sha256(bucket | worker name). The top one is the bucket's home.
   Adding or removing a worker moves only the buckets whose top worker changed.
2. **Balance** (consistent hashing with bounded loads). A bucket is *active* while its
   window holds a request; an active bucket keeps one owner. When a bucket becomes active
   it goes to its last owner, else down its order, skipping workers that already own
   ceil((1 + `balance_slack`) x active buckets / workers) of the active buckets. Plain
   hashing of 16 buckets over 4 workers leaves the busiest with 1.5x the mean on average;
   with `balance_slack` 0 (the default) no worker owns more than its share, and a bucket
   stays where its cache is for as long as it is in use.
3. **Overflow.** Each bucket keeps a sliding window (`window_s`, 60 s) of where its
   requests went. While the window holds more than `overflow_rpm` (15) requests, the
   bucket spreads over the first ceil(count / overflow_rpm) workers of its order, each new
   request going to the one of those that got the fewest of the window's requests (earlier
   in the order on a tie): a hot prefix uses as few workers as its rate needs.
4. **Load bound.** A chosen worker whose in-flight requests exceed the least-loaded
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
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from promptcache.config import RouterConfig

MAX_BUCKETS = 100_000  # windows kept (least recently used dropped beyond)


class Decision(enum.Enum):
    HOME = "home"  # the bucket's first worker
    OVERFLOW = "overflow"  # a later worker of the bucket's order: the bucket is hot
    BALANCE = "balance"  # the home owned its share of the active buckets: the next with room
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


@dataclass(slots=True)
class _Bucket:
    window: deque[tuple[float, str]] = field(default_factory=deque)  # (time, worker)
    owner: str | None = None  # the worker that holds it while it is active


class RoutingPolicy:
    """Decides routes; keeps the active buckets' windows and owners (one thread: the
    router's event loop)."""

    def __init__(self, config: RouterConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self._buckets: OrderedDict[bytes, _Bucket] = OrderedDict()  # least recently used first
        self._owned: Counter[str] = Counter()  # active buckets per owner
        self._last_owner: OrderedDict[bytes, str] = OrderedDict()  # of buckets gone idle
        self._turn = 0

    @property
    def buckets_tracked(self) -> int:
        return len(self._buckets)

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

    def peek(self, bucket: bytes, healthy: Sequence[Candidate]) -> str:
        """The worker whose cache a request of `bucket` would most likely meet now, changing
        nothing (no window, owner or turn moves): under `cache-aware`, the bucket's owner
        (its last one if idle, else its home), overflow and load skips aside; under the
        baselines, which ignore caches, the least loaded."""
        if not healthy:
            raise ValueError("no healthy worker")
        if self.config.policy != "cache-aware":
            return min(healthy, key=lambda c: c.in_flight).name
        order = rendezvous(bucket, [c.name for c in healthy])
        state = self._buckets.get(bucket)
        owner = state.owner if state is not None else self._last_owner.get(bucket)
        return owner if owner in order else order[0]

    def _cache_aware(self, bucket: bytes, healthy: Sequence[Candidate]) -> Route:
        now = self.clock()
        self._expire(now)
        order = rendezvous(bucket, [c.name for c in healthy])
        state = self._buckets.pop(bucket, None) or _Bucket()
        while state.window and state.window[0][0] <= now - self.config.overflow_window_s:
            state.window.popleft()
        if state.owner not in order:
            self._assign(bucket, state, order)
        assert state.owner is not None
        owner = state.owner
        pick, decision = self._spread(state, owner, order)
        loads = {c.name: c.in_flight for c in healthy}
        least = min(loads.values())
        if self._overloaded(loads[pick], least):
            fit = [n for n in order if not self._overloaded(loads[n], least)]
            pick, decision = fit[0], Decision.LOAD_SKIP
        state.window.append((now, pick))
        self._buckets[bucket] = state
        while len(self._buckets) > MAX_BUCKETS:
            self._drop(*self._buckets.popitem(last=False))
        return Route([pick] + [n for n in order if n != pick], decision, bucket)

    def _spread(self, state: _Bucket, owner: str, order: list[str]) -> tuple[str, Decision]:
        """The owner, or while the bucket is over `overflow_rpm` the one of the first
        workers of its order (owner first) that got the fewest of its recent requests."""
        need = max(1, math.ceil((len(state.window) + 1) / self.config.overflow_rpm))
        spread = [owner] + [n for n in order if n != owner]
        spread = spread[: min(need, len(spread))]
        sent = Counter(name for _, name in state.window)
        pick = min(spread, key=lambda n: (sent[n], spread.index(n)))
        if pick != owner:
            return pick, Decision.OVERFLOW
        return pick, Decision.HOME if owner == order[0] else Decision.BALANCE

    def _assign(self, bucket: bytes, state: _Bucket, order: list[str]) -> None:
        """Give an (again) active bucket an owner: its last owner, else its rendezvous
        order, skipping workers that already own their share of the active buckets."""
        if state.owner is not None:
            self._owned[state.owner] -= 1  # it left the rotation
        active = sum(self._owned[n] for n in order) + 1
        cap = math.ceil((1 + self.config.balance_slack) * active / len(order))
        last = self._last_owner.pop(bucket, None)
        prefer = ([last] if last in order else []) + [n for n in order if n != last]
        state.owner = next((n for n in prefer if self._owned[n] < cap), prefer[0])
        self._owned[state.owner] += 1

    def _expire(self, now: float) -> None:
        """Buckets with no request in the window are no longer active (oldest first)."""
        horizon = now - self.config.overflow_window_s
        while self._buckets:
            bucket, state = next(iter(self._buckets.items()))
            if state.window and state.window[-1][0] > horizon:
                break
            del self._buckets[bucket]
            self._drop(bucket, state)

    def _drop(self, bucket: bytes, state: _Bucket) -> None:
        if state.owner is not None:
            self._owned[state.owner] -= 1
            self._last_owner[bucket] = state.owner
            while len(self._last_owner) > MAX_BUCKETS:
                self._last_owner.popitem(last=False)

    def _overloaded(self, load: int, least: int) -> bool:
        c = self.config
        return load - least > c.load_abs_threshold and load > c.load_rel_threshold * least

"""The routing policy without servers: buckets, rendezvous hashing, overflow with a fake
clock, the load bound, and the baselines."""

from __future__ import annotations

from collections import Counter

import pytest

from promptcache.config import RouterConfig
from promptcache.router.policy import Candidate, Decision, RoutingPolicy, bucket_of, rendezvous
from tests.helpers import FakeClock

WORKERS = [f"http://w{i}" for i in range(4)]


def _idle(names: list[str] = WORKERS) -> list[Candidate]:
    return [Candidate(n, 0) for n in names]


def test_bucket_is_tenant_prefix_and_key() -> None:
    tokens = list(range(300))
    base = bucket_of("a", tokens, 256, None)
    assert bucket_of("a", tokens[:256] + [7] * 44, 256, None) == base  # past the prefix
    assert bucket_of("a", [1, *tokens[1:]], 256, None) != base
    assert bucket_of("b", tokens, 256, None) != base
    assert bucket_of("a", tokens, 256, "user-1") != base


def test_rendezvous_moves_only_the_removed_workers_buckets() -> None:
    buckets = [bucket_of("t", [i], 256, None) for i in range(400)]
    before = {b: rendezvous(b, WORKERS)[0] for b in buckets}
    after = {b: rendezvous(b, WORKERS[:3])[0] for b in buckets}
    moved = [b for b in buckets if before[b] != after[b]]
    assert all(before[b] == WORKERS[3] for b in moved)  # only w3's buckets moved
    homes = set(before.values())
    assert homes == set(WORKERS)  # every worker is some bucket's home
    assert rendezvous(buckets[0], list(reversed(WORKERS))) == rendezvous(buckets[0], WORKERS)


def test_same_bucket_same_home_until_overflow_then_second_worker() -> None:
    clock = FakeClock(100.0)
    policy = RoutingPolicy(RouterConfig(overflow_rpm=15), clock)
    bucket = bucket_of("t", [1, 2, 3], 256, "k")
    order = rendezvous(bucket, WORKERS)
    routes = []
    for _ in range(15):
        routes.append(policy.route(bucket, _idle()))
        clock.now += 1
    assert {r.order[0] for r in routes} == {order[0]}
    assert {r.decision for r in routes} == {Decision.HOME}
    spill = policy.route(bucket, _idle())  # the 16th within a minute
    assert spill.order[0] == order[1] and spill.decision is Decision.OVERFLOW
    assert spill.order == [order[1], order[0], order[2], order[3]]  # failover order
    nxt = [policy.route(bucket, _idle()).order[0] for _ in range(14)]
    assert nxt.count(order[1]) == 14  # the second worker catches up to 15 first
    clock.now += 61  # the window empties: home again
    assert policy.route(bucket, _idle()).order[0] == order[0]


def test_load_bound_skips_a_loaded_home() -> None:
    config = RouterConfig(load_abs_threshold=8, load_rel_threshold=1.5)
    policy = RoutingPolicy(config, FakeClock(100.0))
    bucket = bucket_of("t", [9], 256, None)
    order = rendezvous(bucket, WORKERS)
    loads = {order[0]: 9, order[1]: 0, order[2]: 0, order[3]: 0}
    route = policy.route(bucket, [Candidate(n, loads[n]) for n in WORKERS])
    assert route.order[0] == order[1] and route.decision is Decision.LOAD_SKIP
    loads[order[0]] = 8  # not more than 8 above the least loaded: stays home
    route = policy.route(bucket, [Candidate(n, loads[n]) for n in WORKERS])
    assert route.order[0] == order[0]


def test_baselines() -> None:
    rr = RoutingPolicy(RouterConfig(policy="round-robin"), FakeClock(100.0))
    bucket = bucket_of("t", [1], 256, None)
    firsts = [rr.route(bucket, _idle()).order[0] for _ in range(8)]
    assert sorted(firsts) == sorted(WORKERS * 2)
    ll = RoutingPolicy(RouterConfig(policy="least-loaded"), FakeClock(100.0))
    loads = [Candidate(n, load) for n, load in zip(WORKERS, [3, 1, 2, 5], strict=True)]
    assert ll.route(bucket, loads).order == [WORKERS[1], WORKERS[2], WORKERS[0], WORKERS[3]]
    with pytest.raises(ValueError, match="policy"):
        RouterConfig(policy="random")


def test_bounded_loads_balance_active_buckets_and_keep_owners() -> None:
    clock = FakeClock(100.0)
    policy = RoutingPolicy(RouterConfig(), clock)
    buckets = [bucket_of("t", [i], 256, None) for i in range(16)]
    first = [policy.route(b, _idle()) for b in buckets]
    owners = [r.order[0] for r in first]
    assert sorted(Counter(owners).values()) == [4, 4, 4, 4]  # plain hashing: 1.5x on average
    homes = [rendezvous(b, WORKERS)[0] for b in buckets]
    assert all(
        (r.decision is Decision.HOME) == (o == h)
        for r, o, h in zip(first, owners, homes, strict=True)
    )
    assert {r.decision for r in first} <= {Decision.HOME, Decision.BALANCE}
    clock.now += 10
    assert [policy.route(b, _idle()).order[0] for b in buckets] == owners  # sticky
    clock.now += 61  # every bucket goes idle, then comes back: to its last owner
    assert [policy.route(b, _idle()).order[0] for b in buckets] == owners


def test_an_owner_that_leaves_hands_its_buckets_on() -> None:
    policy = RoutingPolicy(RouterConfig(), FakeClock(100.0))
    bucket = bucket_of("t", [5], 256, None)
    owner = policy.route(bucket, _idle()).order[0]
    rest = [w for w in WORKERS if w != owner]
    moved = policy.route(bucket, _idle(rest))
    assert moved.order[0] != owner and moved.order[0] == rendezvous(bucket, rest)[0]


def test_peek_names_the_owner_and_moves_nothing() -> None:
    clock = FakeClock(100.0)
    policy = RoutingPolicy(RouterConfig(), clock)
    buckets = [bucket_of("t", [i], 256, None) for i in range(8)]
    homes = [rendezvous(b, WORKERS)[0] for b in buckets]
    assert [policy.peek(b, _idle()) for b in buckets] == homes  # idle buckets: their homes
    assert policy.buckets_tracked == 0  # a peek opens no window
    owners = [policy.route(b, _idle()).order[0] for b in buckets]  # balanced owners
    assert [policy.peek(b, _idle()) for b in buckets] == owners
    clock.now += 61  # idle again: the last owner is where the cache is
    assert [policy.peek(b, _idle()) for b in buckets] == owners
    assert [policy.route(b, _idle()).order[0] for b in buckets] == owners
    ll = RoutingPolicy(RouterConfig(policy="least-loaded"), FakeClock(100.0))
    assert ll.peek(buckets[0], [Candidate("a", 3), Candidate("b", 1)]) == "b"

"""`promptcache serve --ray`: a local Ray on this machine, two engine replicas, and our
routing policy as Ray Serve's request router: each prefix always reaches the same replica
(the ledger names it) and hits its cache; different prefixes use both replicas.

Ray Serve is the optional `ray` extra, installed by `make prepare`; where it is missing
this module skips.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from promptcache.ledger.store import LEDGER_FILE, Ledger
from tests.api.helpers import MODEL, Server, start_server, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.server]

pytest.importorskip("ray.serve")

DOC = " ".join(f"Entry {i}: the library lends books for two weeks." for i in range(110))


def _ask(server: Server, group: int, question: str) -> tuple[int, str]:
    out = server.client().chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": f"Desk {group}. {DOC}"},
            {"role": "user", "content": question},
        ],
        max_tokens=2,
        temperature=0,
    )
    assert out.usage is not None and out.usage.prompt_tokens_details is not None
    return out.usage.prompt_tokens_details.cached_tokens or 0, out.id


def test_prefix_affine_routing_over_ray_serve_replicas(tmp_path: Path) -> None:
    server = start_server(
        tmp_path,
        *("--ray", "--ray-replicas", "2", "--ray-cpus-per-replica", "0.5"),
        *("--kv-cache-bytes", "128MiB", "--disk-cache-bytes", "0"),
        timeout=600,
    )
    try:
        asked = {(g, q): _ask(server, g, f"Question {q}?") for q in range(2) for g in range(4)}
    finally:
        stop_server(server)
    assert all(asked[(g, 0)][0] == 0 and asked[(g, 1)][0] >= 1024 for g in range(4))
    rows = Ledger(tmp_path / "data" / LEDGER_FILE).rows("outcome = 'finished'")
    worker = {r.request_id: r.worker for r in rows}
    replicas: dict[int, set[str | None]] = defaultdict(set)
    for (g, _), (_, request_id) in asked.items():
        replicas[g].add(worker[request_id])
    assert all(len(r) == 1 and None not in r for r in replicas.values())  # one replica each
    assert len(set().union(*replicas.values())) == 2  # ... and both replicas are used

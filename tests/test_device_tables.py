"""Block tables kept on the device: only what changed is written, rows are reused least
recently used first (never one of the step's own), and a step's lists move in one copy."""

from __future__ import annotations

import pytest
import torch

from promptcache.model.attention.device_tables import DeviceBlockTables, pack

CPU = torch.device("cpu")


def _row(tables: DeviceBlockTables, row: int, n: int) -> list[int]:
    return tables.table[row, :n].tolist()


def test_growth_writes_only_new_blocks_and_changes_rewrite() -> None:
    t = DeviceBlockTables(rows=4, max_blocks=8, device=CPU)
    [a, b] = t.rows([(1, [5, 6]), (2, [9])])
    assert a != b and t.num_writes == 3
    assert _row(t, a, 2) == [5, 6] and _row(t, b, 1) == [9]
    assert t.rows([(1, [5, 6, 7]), (2, [9])]) == [a, b]  # same rows, one new block
    assert t.num_writes == 4 and _row(t, a, 3) == [5, 6, 7]
    assert t.rows([(1, [5, 6, 7])]) == [a] and t.num_writes == 4  # nothing changed
    t.rows([(1, [3, 6])])  # recomputed after preemption: written whole
    assert t.num_writes == 6 and _row(t, a, 2) == [3, 6]
    t.rows([(1, [3, 6, 11])])
    assert t.num_writes == 7 and _row(t, a, 3) == [3, 6, 11]


def test_rows_reused_least_recently_used_first() -> None:
    t = DeviceBlockTables(rows=2, max_blocks=4, device=CPU)
    [ra] = t.rows([(1, [1])])
    [rb] = t.rows([(2, [2])])
    t.rows([(1, [1])])  # 1 used again: 2 is now the least recently used
    [rc] = t.rows([(3, [3, 4])])
    assert rc == rb and _row(t, rc, 2) == [3, 4]
    # 1 and 3 in one step keep their rows; 2 comes back and takes the older of them...
    assert t.rows([(1, [1]), (3, [3, 4])]) == [ra, rc]
    [rb2] = t.rows([(2, [2])])
    assert rb2 == ra and _row(t, rb2, 1) == [2]
    # ... and a step never takes a row from one of its own sequences
    assert sorted(t.rows([(3, [3, 4]), (1, [1])])) == [0, 1]
    with pytest.raises(AssertionError, match="more sequences than table rows"):
        t.rows([(1, [1]), (2, [2]), (3, [3])])


def test_too_many_blocks_and_pack() -> None:
    t = DeviceBlockTables(rows=2, max_blocks=2, device=CPU)
    with pytest.raises(ValueError, match="3 blocks exceed the table width 2"):
        t.rows([(1, [1, 2, 3])])
    parts = pack([[1, 2], [], [3]], CPU)
    assert [p.tolist() for p in parts] == [[1, 2], [], [3]]
    assert all(p.dtype == torch.int64 for p in parts)

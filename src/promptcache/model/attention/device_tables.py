"""Block tables kept on the device, and a step's small inputs moved there in one copy.

The Triton attention reads each sequence's block table through a row index, so the
tables need not be rebuilt for every step: each sequence owns a row of one device tensor
for as long as it is among the recently scheduled, and a step writes only the entries
that changed since the sequence's last step (usually none, or the one block it just
grew). A host mirror of each row says what is there; a table that changed other than
by growing (preemption, recompute) is written whole again.

    table (rows, max_blocks) on the device        mirror (host lists)
    row 0: seq a  [17 18 19 40 41 ..]             [17 18 19 40 41]
    row 1: seq b  [ 3  4 ..]                      [3 4]            step: b grew -> 1 entry

Rows are handed out least recently used first, so a sequence that waits keeps its row
while the others run. `pack` turns a step's lists of ids, positions, slots and the
kernel's small tables into one host tensor, pinned beside a GPU, and one copy.
"""

from __future__ import annotations

from collections import OrderedDict

import torch


class DeviceBlockTables:
    """`rows` block tables of up to `max_blocks` ids each, on `device`."""

    def __init__(self, rows: int, max_blocks: int, device: torch.device) -> None:
        self.table = torch.zeros((rows, max_blocks), dtype=torch.int32, device=device)
        self._owner: OrderedDict[int, int] = OrderedDict()  # sequence key -> row, LRU first
        self._free = list(range(rows - 1, -1, -1))
        self._mirror: list[list[int]] = [[] for _ in range(rows)]
        self.num_writes = 0  # entries written so far (for tests and stats)

    def rows(self, tables: list[tuple[int, list[int]]]) -> list[int]:
        """The rows that hold each (sequence key, block ids) of a step, written where they
        differ from what the device holds. Keys tell the sequences of one step apart (the
        runner uses `id(seq)`); a key reused by another sequence only costs a rewrite, as
        the mirror is compared. At most `rows` sequences a step."""
        assert len(tables) <= len(self._mirror), "more sequences than table rows"
        step = {rid for rid, _ in tables}
        rows: list[int] = []
        at_r: list[int] = []
        at_c: list[int] = []
        values: list[int] = []
        for rid, blocks in tables:
            if len(blocks) > self.table.shape[1]:
                raise ValueError(
                    f"{len(blocks)} blocks exceed the table width {self.table.shape[1]}"
                )
            row = self._row(rid, step)
            mirror = self._mirror[row]
            n = len(mirror)
            start = n if len(blocks) >= n and blocks[:n] == mirror else 0
            if start == 0:
                mirror.clear()
            new = blocks[start:]
            mirror.extend(new)
            at_r.extend([row] * len(new))
            at_c.extend(range(start, start + len(new)))
            values.extend(new)
            rows.append(row)
        if values:
            self._write(at_r, at_c, values)
        return rows

    def _row(self, rid: int, step: set[int]) -> int:
        row = self._owner.get(rid)
        if row is not None:
            self._owner.move_to_end(rid)
            return row
        if self._free:
            row = self._free.pop()
        else:  # the least recently used owner that is not in this step
            old = next(r for r in self._owner if r not in step)
            row = self._owner.pop(old)
            self._mirror[row].clear()
        self._owner[rid] = row
        return row

    def _write(self, rows: list[int], cols: list[int], values: list[int]) -> None:
        updates = pack([rows, cols, values], self.table.device)
        r, c, v = updates[0], updates[1], updates[2]
        self.table.index_put_((r, c), v.to(torch.int32))
        self.num_writes += len(values)


def pack(lists: list[list[int]], device: torch.device) -> list[torch.Tensor]:
    """Lists of ints as int64 tensors on `device`, moved in one copy (from pinned memory
    beside a GPU, so the copy does not wait on the host)."""
    flat = [x for values in lists for x in values]
    host = torch.tensor(flat, dtype=torch.int64)
    if device.type == "cuda":
        host = host.pin_memory()
    moved = host.to(device, non_blocking=True)
    return list(moved.split([len(values) for values in lists]))

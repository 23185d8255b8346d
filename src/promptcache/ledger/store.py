"""The ledger's SQLite file: schema versions and migrations, a writer thread, and queries.

WAL mode; one writer thread takes rows from a queue and commits them in batches, so the
event loop and the engine never wait on the disk. `record` hands back a future that
resolves once the row is committed: the server awaits it before it sends a finished
request's last bytes, so a `kill -9` never loses the row of a request whose client saw it
end. A power loss or OS crash may, under `synchronous` "normal" (the `ledger_synchronous`
setting), roll back the rows committed since the last checkpoint; under "full" it loses
none. Neither corrupts the file. A failed write is logged and counted; it never fails the
request.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from promptcache.config import SQLITE_SYNCHRONOUS
from promptcache.ledger.rows import LedgerRow

log = logging.getLogger(__name__)

# MIGRATIONS[i] takes the schema from version i to i + 1 (PRAGMA user_version).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        time REAL NOT NULL,
        request_id TEXT,
        tenant TEXT,
        api_key_id TEXT,
        endpoint TEXT NOT NULL,
        model TEXT NOT NULL,
        retention TEXT NOT NULL,
        prompt_cache_key TEXT,
        outcome TEXT NOT NULL,
        finish_reason TEXT,
        prompt_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        reused_tokens INTEGER NOT NULL,
        written_tokens INTEGER NOT NULL,
        ttft_s REAL,
        latency_s REAL NOT NULL,
        price_row TEXT NOT NULL,
        cost_usd REAL NOT NULL,
        cost_without_cache_usd REAL NOT NULL,
        cache_reason TEXT,
        matched_tokens INTEGER,
        error TEXT,
        worker TEXT
    );
    CREATE INDEX requests_time ON requests (time);
    CREATE INDEX requests_tenant_time ON requests (tenant, time);
    CREATE INDEX requests_request_id ON requests (request_id);
    """,
    "ALTER TABLE requests ADD COLUMN diagnosis TEXT;",
    "ALTER TABLE requests ADD COLUMN reused_host_tokens INTEGER NOT NULL DEFAULT 0;",
    "ALTER TABLE requests ADD COLUMN reused_disk_tokens INTEGER NOT NULL DEFAULT 0;",
    "ALTER TABLE requests ADD COLUMN cache_write_long_tokens INTEGER NOT NULL DEFAULT 0;",
)
SCHEMA_VERSION = len(MIGRATIONS)
LEDGER_FILE = "ledger.sqlite3"  # under the server's data dir
BATCH = 256  # most rows committed in one transaction


def connect(path: Path, synchronous: str = "normal") -> sqlite3.Connection:
    """A connection in WAL mode (readers never block the writer) at `synchronous` level
    "normal" or "full", schema migrated."""
    db = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    set_synchronous(db, synchronous)
    migrate(db)
    return db


def set_synchronous(db: sqlite3.Connection, level: str) -> None:
    """`PRAGMA synchronous` to one of `SQLITE_SYNCHRONOUS`. Both keep a WAL database
    consistent; "normal" syncs the log only at checkpoints (a power loss may roll back
    commits since the last one), "full" at every commit. Durable across a process kill
    either way."""
    if level not in SQLITE_SYNCHRONOUS:
        raise ValueError(f"synchronous must be one of {', '.join(SQLITE_SYNCHRONOUS)}: {level!r}")
    db.execute(f"PRAGMA synchronous={level.upper()}")


def migrate(db: sqlite3.Connection) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"ledger schema version {version} is newer than this promptcache ({SCHEMA_VERSION})"
        )
    for i in range(version, SCHEMA_VERSION):
        with db:
            db.executescript(MIGRATIONS[i])
            db.execute(f"PRAGMA user_version = {i + 1}")


@dataclass(slots=True)
class _Pending:
    row: LedgerRow
    loop: asyncio.AbstractEventLoop | None
    done: asyncio.Future[None] | None


class Ledger:
    """Append-only request rows in `path` (created with its folder if missing), committed
    at `synchronous` level "normal" or "full" (`ledger_synchronous`)."""

    def __init__(self, path: Path, synchronous: str = "normal") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = connect(path, synchronous)
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="promptcache-ledger", daemon=True)
        self._thread.start()
        self.rows_written = 0
        self.write_failures = 0

    # -- writing --------------------------------------------------------------------------

    def record(self, row: LedgerRow) -> asyncio.Future[None] | None:
        """Queue a row; in an event loop, returns a future resolved once it is committed
        (resolved, never failed, even when the write fails: that is logged and counted)."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        done = loop.create_future() if loop is not None else None
        self._queue.put(_Pending(row, loop, done))
        return done

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop the writer and close the file."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._db.close()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < BATCH:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._write(batch)
            if stop:
                return

    def _write(self, batch: list[_Pending]) -> None:
        cols = LedgerRow.columns()
        sql = f"INSERT INTO requests ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
        try:
            with self._db:
                self._db.executemany(sql, [p.row.values() for p in batch])
            self.rows_written += len(batch)
        except sqlite3.Error as exc:
            self.write_failures += len(batch)
            log.error("ledger: %d row(s) not written to %s: %s", len(batch), self.path, exc)
        for p in batch:
            if p.loop is not None and p.done is not None:
                p.loop.call_soon_threadsafe(_resolve, p.done)

    # -- reading --------------------------------------------------------------------------

    def rows(self, where: str = "", args: Sequence[object] = ()) -> list[LedgerRow]:
        """Rows matching an SQL condition over the columns, oldest first."""
        return read_rows(self.path, where, args)


def read_rows(
    path: Path, where: str = "", args: Sequence[object] = (), newest: int | None = None
) -> list[LedgerRow]:
    """Rows of the ledger at `path` matching an SQL condition, oldest first; with `newest`,
    only the newest that many, newest first (none when the file does not exist yet)."""
    if not path.exists():
        return []
    cols = LedgerRow.columns()
    sql = f"SELECT {', '.join(cols)} FROM requests"
    if where:
        sql += f" WHERE {where}"
    reader = sqlite3.connect(str(path), timeout=30)
    try:
        order = " ORDER BY id" if newest is None else f" ORDER BY id DESC LIMIT {int(newest)}"
        found = reader.execute(sql + order, tuple(args)).fetchall()
    finally:
        reader.close()
    return [LedgerRow(*r) for r in found]


def _resolve(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)

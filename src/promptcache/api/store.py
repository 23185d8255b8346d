"""Stored responses for `previous_response_id` and `GET /v1/responses/{id}` (SQLite).

Each row keeps the tenant, the response object and the conversation that produced it
(the input messages, history included, plus the assistant's reply), so a later request
can continue the conversation with the same prefix and hit the prompt cache. WAL mode at
`synchronous` "normal" or "full" (the `responses_synchronous` setting): under "normal" a
power loss or OS crash may forget the responses stored since the last checkpoint; under
"full" none. Neither corrupts the file; a process crash loses nothing committed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptcache.ledger.store import set_synchronous

SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    created_at REAL NOT NULL,
    conversation TEXT NOT NULL,  -- JSON list of {role, content (a string or part strings)}
    response TEXT NOT NULL       -- JSON Response object
)
"""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    response: dict[str, Any]
    conversation: list[dict[str, Any]]


class ResponseStore:
    """A small, thread-safe SQLite store (WAL, one connection guarded by a lock)."""

    def __init__(self, path: Path, synchronous: str = "normal") -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        set_synchronous(self._db, synchronous)
        self._db.execute(SCHEMA)
        self._db.commit()
        self._lock = threading.Lock()

    def put(
        self, tenant: str, response: dict[str, Any], conversation: list[dict[str, str]]
    ) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                (
                    response["id"],
                    tenant,
                    time.time(),
                    json.dumps(conversation),
                    json.dumps(response),
                ),
            )

    def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        """The response, only if it belongs to `tenant`."""
        with self._lock:
            row = self._db.execute(
                "SELECT response, conversation FROM responses WHERE id = ? AND tenant = ?",
                (response_id, tenant),
            ).fetchone()
        if row is None:
            return None
        return StoredResponse(json.loads(row[0]), json.loads(row[1]))

    def close(self) -> None:
        with self._lock:
            self._db.close()

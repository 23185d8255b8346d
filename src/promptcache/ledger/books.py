"""The books of one server: its ledger, its served model's name and price, and the
end-of-request hook that turns every request into a row."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from promptcache.engine.lifecycle import RequestRecord
from promptcache.ledger.prices import Price
from promptcache.ledger.rows import LedgerRow
from promptcache.ledger.store import Ledger


@dataclass(slots=True)
class Books:
    ledger: Ledger
    model: str  # the served model's name, as clients ask for it
    price_row: str  # the name of the price row that applies
    price: Price

    def on_request_end(self, record: RequestRecord) -> asyncio.Future[None] | None:
        """The end-of-request hook: queue the row; the future resolves once committed."""
        return self.ledger.record(LedgerRow.of(record, self.model, self.price_row, self.price))

"""The books of one server: its ledger, its served model's name and price, and the
end-of-request hook that turns every request into a row with its miss diagnosis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from promptcache.engine.lifecycle import RequestRecord
from promptcache.ledger.diagnosis import PromptHistory, Rules, diagnose
from promptcache.ledger.prices import Price
from promptcache.ledger.rows import LedgerRow
from promptcache.ledger.store import Ledger

ANTHROPIC_ENDPOINT = "messages"  # the endpoint name `/v1/messages` requests carry


@dataclass(slots=True)
class Books:
    ledger: Ledger
    model: str  # the served model's name, as clients ask for it
    price_row: str  # the name of the price row that applies
    price: Price
    rules: Rules | None = None  # the cache's rules; None: no diagnosis
    decode: Callable[[list[int]], str] = field(default=lambda ids: "")
    history: PromptHistory = field(default_factory=lambda: PromptHistory(64))
    anthropic: tuple[str, Price] | None = None  # the price row of `/v1/messages` requests

    def on_request_end(self, record: RequestRecord) -> asyncio.Future[None] | None:
        """The end-of-request hook: diagnose, then queue the row; the future resolves once
        the row is committed."""
        found = None
        if self.rules is not None:
            found = diagnose(record, self.rules, self.history, self.decode)
            if record.usage is not None:
                tenant = record.request.cache.tenant
                ids = record.request.token_ids
                output = record.request.output
                self.history.add(
                    tenant,
                    record.request_id,
                    ids,
                    record.worker,
                    output.tools_digest(),
                    output.format_digest(),
                )
        text = found.to_json() if found is not None else None
        row_name, price = self.price_row, self.price
        if record.endpoint == ANTHROPIC_ENDPOINT and self.anthropic is not None:
            row_name, price = self.anthropic
        row = LedgerRow.of(record, self.model, row_name, price, text)
        return self.ledger.record(row)

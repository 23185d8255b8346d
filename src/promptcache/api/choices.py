"""Several engine requests behind one API response: n > 1 choices (`engine.choices`) and
Completions' list of prompts. Submitted together or not at all, awaited together, and
streamed merged as they come."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing

from promptcache.api.context import ServerContext
from promptcache.api.errors import APIError, invalid
from promptcache.api.sampling import INVALID
from promptcache.engine.choices import MAX_CHOICES
from promptcache.engine.client import Disconnected, RequestStream, discard
from promptcache.engine.outputs import RequestOutput
from promptcache.engine.request import GenerationRequest


def choice_count(n: int | None, best_of: int | None = None) -> int:
    """The request's `n` (default 1), checked; `best_of` must equal it where it is sent
    (choosing the best of more than n is not done here)."""
    count = 1 if n is None else n
    if not 1 <= count <= MAX_CHOICES:
        raise invalid(f"'n' must be between 1 and {MAX_CHOICES}, got {count}", "n", INVALID)
    if best_of not in (None, 0, count):  # 0: the schema's minimum, taken as unset
        raise invalid(
            f"'best_of': {best_of} is not supported here: it must equal n ({count}); "
            "ranking more candidates than are returned is not done",
            "best_of",
            "unsupported_value",
        )
    return count


async def submit_all(
    ctx: ServerContext, requests: Sequence[GenerationRequest], param: str
) -> list[RequestStream]:
    """Queue every request, or none: when one is refused (too long, queue full) the ones
    queued before it are aborted and the refusal raised."""
    streams: list[RequestStream] = []
    try:
        for request in requests:
            streams.append(ctx.submit(request, param))
    except APIError:
        await discard(streams)
        raise
    return streams


async def finals(
    streams: Sequence[RequestStream], disconnected: Disconnected | None
) -> list[RequestOutput]:
    """Every request's final output; if one fails or the client leaves, the others are
    aborted."""
    waits = [asyncio.ensure_future(s.final(disconnected)) for s in streams]
    try:
        return list(await asyncio.gather(*waits))
    except BaseException:
        for w in waits:
            w.cancel()  # cancelling a wait closes its outputs, which aborts the request
        await asyncio.gather(*waits, return_exceptions=True)
        raise


async def merged(
    gens: Sequence[AsyncGenerator[RequestOutput, None]],
) -> AsyncGenerator[tuple[int, RequestOutput], None]:
    """The outputs of several requests as they come, tagged with their index; closing it
    closes (aborts) every request still running."""
    queue: asyncio.Queue[tuple[int, RequestOutput | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, gen: AsyncGenerator[RequestOutput, None]) -> None:
        try:
            async with aclosing(gen):
                async for out in gen:
                    await queue.put((i, out))
            await queue.put((i, None))
        except BaseException as exc:
            await queue.put((i, exc))

    tasks = [asyncio.create_task(pump(i, g)) for i, g in enumerate(gens)]
    try:
        running = len(tasks)
        while running:
            i, got = await queue.get()
            if got is None:
                running -= 1
            elif isinstance(got, BaseException):
                raise got
            else:
                yield i, got
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

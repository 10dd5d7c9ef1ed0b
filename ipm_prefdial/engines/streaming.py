"""Streaming a batch through an engine's workers: a dialogue's requests in turn order on one stream, results handed
over one at a time so that a killed run loses at most the requests in flight."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Sequence

from ipm_prefdial.engines.requests import ChatRequest, ChatResult


def dialogue_groups(requests: Sequence[ChatRequest]) -> list[list[int]]:
    """Request indices by group (one dialogue's requests, in order), longest groups first: a long dialogue started
    last would leave the other streams idle at the end."""
    groups: dict[object, list[int]] = {}
    for i, request in enumerate(requests):
        groups.setdefault(request.group if request.group is not None else ("#", i), []).append(i)
    return sorted(groups.values(), key=len, reverse=True)


async def hand_over(done: asyncio.Queue, i: int, result: ChatResult) -> None:
    """A producer's side of ``handed_out``: put the result, then wait until the consumer has dealt with it."""
    taken: asyncio.Future = asyncio.get_running_loop().create_future()
    await done.put((i, result, taken))
    await taken


async def handed_out(done: asyncio.Queue, producers: list[asyncio.Task], n: int
                     ) -> AsyncIterator[tuple[int, ChatResult]]:
    """Yield the ``n`` results the producers hand over. A producer is released when the consumer comes back for the
    next result (the runner commits each result before it does): at most one result per producer is ever answered
    but not committed. A producer that crashes raises here; the producers are cancelled at the end."""
    def crashed(task: asyncio.Task) -> None:  # a crash reaches the consumer through the queue, like a result
        if not task.cancelled() and task.exception() is not None:
            done.put_nowait((None, task.exception(), None))

    for p in producers:
        p.add_done_callback(crashed)
    handed: asyncio.Future | None = None
    try:
        for _ in range(n):
            if handed is not None:
                handed.set_result(None)
                handed = None
            i, result, handed = await done.get()
            if i is None:
                raise result
            yield i, result
    finally:
        for p in producers:
            p.cancel()
        await asyncio.gather(*producers, return_exceptions=True)


def stream_grouped(requests: Sequence[ChatRequest], complete, concurrency: int
                   ) -> AsyncIterator[tuple[int, ChatResult]]:
    """Run ``complete`` (which never raises) over requests with ``concurrency`` workers. A worker takes a whole
    group and sends its requests in order, so one dialogue's growing prompts meet a warm prefix cache.

    Backpressure: a worker sends its next request only once the consumer has taken its previous result and come
    back for another (the runner commits each result before it does), so at any moment at most ``concurrency``
    results are answered but not committed, and a killed run loses at most the requests in flight, however
    fast the server answers and however busy the consumer is."""
    todo = collections.deque(dialogue_groups(requests))
    done: asyncio.Queue = asyncio.Queue()  # one entry per worker at most

    async def worker() -> None:
        while todo:
            for i in todo.popleft():
                await hand_over(done, i, await complete(requests[i]))

    workers = [asyncio.create_task(worker()) for _ in range(max(1, min(concurrency, len(todo))))]
    return handed_out(done, workers, len(requests))

"""Run a batch of requests through the cache and an engine, with accounting and a progress bar."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from rich.progress import Progress, TaskID

from ipm_prefdial.engines.base import Engine
from ipm_prefdial.engines.breaker import EngineStop
from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.engines.requests import TRANSIENT, UNSENT, ChatRequest, ChatResult
from ipm_prefdial.errors import EXIT_REFUSED

FIRST_ANSWERS = 16  # new answers after which a run can estimate its rate


@dataclass
class Stats:
    """Accounting of one run (or the sum of several: ``add``)."""

    requests: int = 0
    cache_hits: int = 0
    sent: int = 0  # requests given to the engine in this run
    attempts: int = 0  # HTTP/engine attempts, retries included
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: Counter = field(default_factory=Counter)  # kind -> count (final failures of this run)
    replayed_failures: int = 0  # failures recorded earlier and not re-sent (--retry-failed re-sends them)
    merged: int = 0  # requests that repeat another one of the same batch: sent once, answered for both
    reseeded: int = 0  # requests asked again with a new seed because their answer did not parse
    truncated_prompts: int = 0  # prompts that lost history messages to fit the context budget
    wall_s: float = 0.0

    def count(self, result: ChatResult) -> None:
        self.prompt_tokens += result.prompt_tokens
        self.cached_prompt_tokens += result.cached_tokens
        self.completion_tokens += result.completion_tokens
        self.truncated_prompts += result.truncated_messages > 0
        if not result.ok:
            self.failures[result.error_kind] += 1

    def add(self, other: Stats) -> None:
        for name in ("requests", "cache_hits", "sent", "attempts", "prompt_tokens", "cached_prompt_tokens",
                     "completion_tokens", "replayed_failures", "merged", "reseeded", "truncated_prompts", "wall_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.update(other.failures)

    def as_dict(self) -> dict:
        return {
            "requests": self.requests, "cache_hits": self.cache_hits, "sent": self.sent, "attempts": self.attempts,
            "prompt_tokens": self.prompt_tokens, "cached_prompt_tokens": self.cached_prompt_tokens,
            "completion_tokens": self.completion_tokens, "failures": dict(sorted(self.failures.items())),
            "replayed_failures": self.replayed_failures, "merged": self.merged, "reseeded": self.reseeded,
            "truncated_prompts": self.truncated_prompts,
            "wall_s": round(self.wall_s, 3),
        }


def transient_left(accountings: Iterable[dict]) -> dict[str, int]:
    """Transient failures (kind -> requests) in ``Stats.as_dict`` accountings: requests whose retries ran out, which
    a rerun sends again. A run that has any is incomplete."""
    left: Counter = Counter()
    for accounting in accountings:
        left.update({k: v for k, v in accounting["failures"].items() if k in TRANSIENT})
    return dict(sorted(left.items()))


@dataclass
class Plan:
    """What a batch needs before anything is sent: each request fitted to the engine's context budget and keyed
    by the model's identity, the results the cache already holds, and the requests still to send (a request
    that repeats an earlier one of the batch is sent once: ``merged`` maps it to that one)."""

    identity: str
    fitted: list[tuple[ChatRequest, int]]
    keys: list[str]
    results: list[ChatResult | None]
    replayed: set[int]
    pending: list[int]
    merged: dict[int, int]

    @property
    def cached(self) -> int:
        return sum(r is not None for r in self.results) - len(self.replayed)


def plan_requests(engine: Engine, requests: Sequence[ChatRequest], cache: RequestCache | None = None,
                  retry_failed: bool = False) -> Plan:
    """Look a batch up in the cache without sending anything (``run_requests`` and ``--dry-run`` share it)."""
    identity = engine.identify(cache)  # by content; the cache remembers file digests
    # Key, seed and what is sent all describe the request as fitted to the engine's context budget.
    fitted = [engine.fit(r) for r in requests]
    keys = [r.key(identity) for r, _ in fitted]
    answers = cache.answers(keys) if cache else {}
    failed = cache.failures(keys) if cache and not retry_failed else {}
    plan = Plan(identity, fitted, keys, [None] * len(requests), set(), [], {})
    first_of: dict[str, int] = {}
    for i, key in enumerate(keys):
        if key in answers:
            plan.results[i] = answers[key]
        elif key in failed and failed[key].error_kind not in TRANSIENT:  # a property of the answer: replayed
            plan.results[i] = failed[key]
            plan.replayed.add(i)
        elif key in first_of:
            plan.merged[i] = first_of[key]
        else:
            first_of[key] = i
            plan.pending.append(i)
    return plan


async def run_requests(engine: Engine, requests: Sequence[ChatRequest], *, cache: RequestCache | None = None,
                       retry_failed: bool = False, progress: Progress | None = None, description: str = "requests",
                       stats: Stats | None = None, labels: Sequence[str] | None = None,
                       stats_by: dict[str, Stats] | None = None,
                       on_first: Callable[[int, float, int], None] | None = None,
                       progress_task: TaskID | None = None) -> list[ChatResult]:
    """One result per request, in order. Cached answers are not re-sent; every new result is committed as it
    arrives, so a killed run loses nothing that was answered.

    ``labels`` (one per request) with ``stats_by`` splits the accounting, e.g. per task when the SP, RG and VM
    requests of a build share one engine and run as one batch (all slots busy, each dialogue on its stream);
    a label's ``wall_s`` is the time until its last result.

    ``on_first(answered, seconds, left)`` is called once, after the first ``FIRST_ANSWERS`` new answers (or all of
    them, when fewer are sent), with the time they took from the first send: what an estimate is made from.

    ``progress_task``: a bar of ``progress`` to advance instead of a new one (a batch run in parts, one bar)."""
    stats = stats if stats is not None else Stats()
    if labels is not None:
        assert stats_by is not None and len(labels) == len(requests)
    books = [[stats] + ([stats_by.setdefault(label, Stats())] if labels is not None else [])  # type: ignore[union-attr]
             for label in (labels if labels is not None else [None] * len(requests))]
    started = time.perf_counter()
    last_of: dict[int, float] = {}
    if not engine.model:  # an endpoint names its model only when asked (GET /models)
        await engine.start()
    plan = plan_requests(engine, requests, cache, retry_failed)
    if plan.pending:  # a model is loaded only when something must be sent: a cached rerun starts nothing
        await engine.start()
    if hasattr(engine, "count_cached"):  # a metered engine counts the dollars of the answers the cache holds
        cached = {plan.keys[i]: r for i, r in enumerate(plan.results) if r is not None}  # (failures: paid too)
        engine.count_cached(cached.values())  # each answer once, however many requests repeat it
    results = plan.results
    for i in range(len(requests)):
        for book in books[i]:
            book.requests += 1
            if i in plan.replayed:
                book.replayed_failures += 1
            elif results[i] is not None:
                book.cache_hits += 1
            elif i in plan.merged:
                book.merged += 1
            else:
                book.sent += 1
    task = progress_task
    known = len(requests) - len(plan.pending) - len(plan.merged)  # answered before anything is sent
    if progress and task is not None:
        progress.advance(task, known)
    elif progress:
        task = progress.add_task(description, total=len(requests), completed=known)
    if plan.pending:
        first_at, fresh, report_at = time.perf_counter(), 0, min(FIRST_ANSWERS, len(plan.pending))
        refused: list[str] = []  # client errors recorded in this run
        try:
            async for j, result in engine.stream([plan.fitted[i][0] for i in plan.pending]):
                fresh += 1
                if on_first is not None and fresh == report_at:
                    on_first(fresh, time.perf_counter() - first_at, len(plan.pending) - fresh)
                i = plan.pending[j]
                result.truncated_messages = plan.fitted[i][1]
                results[i] = result
                for book in books[i]:
                    book.attempts += result.attempts
                    book.reseeded += "reseeded" in result.extra
                    last_of[id(book)] = time.perf_counter()
                if cache and not result.from_cache and result.error_kind not in UNSENT:
                    # (a batch engine commits what it collects itself: its results come marked from_cache)
                    cache.put(plan.keys[i], plan.identity, result)
                    if result.error_kind == "client_error":
                        refused.append(plan.keys[i])
                if progress and task is not None:
                    progress.advance(task)
        except EngineStop as stop:
            if stop.exit_code == EXIT_REFUSED and cache and refused:
                cache.forget_failures(refused)  # the endpoint refuses every request: no verdict on these ones
            raise
    for i, source in plan.merged.items():
        results[i] = results[source]
        if progress and task is not None:
            progress.advance(task)
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:  # an engine that drops a request is a bug in the engine; say so instead of guessing
        raise RuntimeError(f"engine {engine.name} returned no result for {len(missing)} requests")
    for i, r in enumerate(results):
        r.truncated_messages = plan.fitted[i][1]  # type: ignore[union-attr]
        for book in books[i]:
            book.count(r)  # type: ignore[arg-type]
    now = time.perf_counter()
    stats.wall_s += now - started
    if labels is not None:
        for part in {id(b[1]): b[1] for b in books}.values():
            part.wall_s += last_of.get(id(part), started) - started
    return results  # type: ignore[return-value]


def run_coroutine(coro):
    """``asyncio.run(coro)``, but the result never sits on the main task. At its end, Python 3.11's
    ``asyncio.run`` looks up the SIGINT handler, and the lookup formats the handler's repr, which holds the main
    task and so the full repr of its result: for a whole build's pairs, a string of hundreds of MB (the build's
    peak memory) and seconds of CPU."""
    box: list = []

    async def main() -> None:
        box.append(await coro)

    asyncio.run(main())
    return box[0]


def run_sync(engine: Engine, requests: Sequence[ChatRequest], **kwargs) -> list[ChatResult]:
    """``run_requests`` from synchronous code; the engine is closed after the batch."""

    async def main() -> list[ChatResult]:
        try:
            return await run_requests(engine, requests, **kwargs)
        finally:
            await engine.close()

    return run_coroutine(main())

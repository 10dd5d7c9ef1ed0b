"""``ipm engine-check``: send N short chat requests through an engine and report throughput + accounting."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from ipm_prefdial.engines.base import Engine
from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.engines.requests import ChatRequest, Sampling
from ipm_prefdial.engines.runner import Stats, run_coroutine, run_requests
from ipm_prefdial.progress import progress_bar

TOPICS = ("lost their job", "failed an exam", "argued with a close friend", "moved to a new city",
          "cannot sleep before an interview", "misses a parent who passed away", "feels lonely at weekends",
          "is worried about money")


def check_requests(n: int, max_tokens: int) -> list[ChatRequest]:
    """n distinct short prompts (the index makes each one unique, so none is a cache hit of another)."""
    return [
        ChatRequest.chat(
            [{"role": "system", "content": "You are a kind, brief supporter."},
             {"role": "user", "content": f"({i}) Write one sentence of comfort for someone who "
                                         f"{TOPICS[i % len(TOPICS)]}."}],
            sampling=Sampling(temperature=0.7, top_p=0.95, max_tokens=max_tokens))
        for i in range(n)
    ]


async def engine_check(engine: Engine, n: int, max_tokens: int, cache_dir: Path | None, retry_failed: bool,
                       console: Console) -> tuple[Stats, float]:
    cache = RequestCache.in_dir(cache_dir) if cache_dir else None
    stats = Stats()
    t0 = time.perf_counter()
    await engine.start()
    startup = time.perf_counter() - t0
    try:
        with progress_bar(console) as progress:
            await run_requests(engine, check_requests(n, max_tokens), cache=cache, retry_failed=retry_failed,
                               progress=progress, description=f"{engine.name} requests", stats=stats)
    finally:
        await engine.close()
        if cache:
            cache.close()
    return stats, startup


def run_check(engine: Engine, n: int, max_tokens: int, cache_dir: Path | None, retry_failed: bool,
              console: Console) -> tuple[Stats, float]:
    return run_coroutine(engine_check(engine, n, max_tokens, cache_dir, retry_failed, console))

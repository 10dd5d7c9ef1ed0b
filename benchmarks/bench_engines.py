"""Benchmark: the embedded llama.cpp engine's output tokens/s at concurrency 1 and 4 on short prompts, and the
time to replay 10,000 cached requests. Prints figures; exits 1 only if the engine fails outright."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from ipm_prefdial.engines.base import Engine
from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.engines.check import check_requests
from ipm_prefdial.engines.local import LocalEngine
from ipm_prefdial.engines.requests import ChatRequest, ChatResult, Sampling
from ipm_prefdial.engines.runner import Stats, run_requests

N_REQUESTS = 32
MAX_TOKENS = 64
N_REPLAY = 10_000


async def throughput(concurrency: int) -> tuple[float, float, Stats]:
    engine = LocalEngine(slots=concurrency)
    await engine.start()
    try:
        await run_requests(engine, check_requests(2, 8))  # warm-up, not counted
        stats = Stats()
        # distinct prompts per concurrency level: nothing is a server-side prompt-cache hit of the other run
        requests = [ChatRequest(r.messages, r.sampling, sample=concurrency) for r in check_requests(N_REQUESTS,
                                                                                                    MAX_TOKENS)]
        started = time.perf_counter()
        await run_requests(engine, requests, stats=stats)
        wall = time.perf_counter() - started
    finally:
        await engine.close()
    return stats.completion_tokens / wall, N_REQUESTS / wall, stats


class Refuse(Engine):
    """An engine that must not be asked: every request of the replay has to come from the cache."""

    name = "refuse"
    model = "replay-model"

    def stream(self, requests):
        raise AssertionError(f"{len(requests)} requests reached the engine during a cached replay")


async def replay() -> tuple[float, float]:
    requests = [ChatRequest.chat([{"role": "system", "content": "S" * 200},
                                  {"role": "user", "content": f"seeker: message {i} " + "x" * 300}],
                                 sampling=Sampling(max_tokens=64)) for i in range(N_REPLAY)]
    engine = Refuse()
    identity = engine.identify()  # what cache keys are derived from (served:<model> for an engine without files)
    with tempfile.TemporaryDirectory() as tmp:
        cache = RequestCache(Path(tmp) / "c.sqlite")
        started = time.perf_counter()
        for r in requests:  # one transaction per answer, as a run commits them
            cache.put(r.key(identity), identity,
                      ChatResult(text="I hear you.", parsed="I hear you.", finish_reason="stop", prompt_tokens=90,
                                 completion_tokens=4))
        commit_s = time.perf_counter() - started
        stats = Stats()
        started = time.perf_counter()
        results = await run_requests(engine, requests, cache=cache, stats=stats)
        elapsed = time.perf_counter() - started
        cache.close()
    assert stats.cache_hits == N_REPLAY and all(r.ok for r in results)
    return elapsed, commit_s


def main() -> int:
    figures = {}
    for concurrency in (1, 4):
        tok_s, req_s, stats = asyncio.run(throughput(concurrency))
        figures[concurrency] = tok_s
        print(f"local engine (SmolLM2-135M Q4_1), concurrency {concurrency}: {tok_s:.1f} output tokens/s, "
              f"{req_s:.2f} requests/s ({N_REQUESTS} requests, max_tokens {MAX_TOKENS}, "
              f"failures {dict(stats.failures) or 0})")
    print(f"concurrency 4 / concurrency 1: {figures[4] / figures[1]:.2f}x")
    elapsed, commit_s = asyncio.run(replay())
    print(f"commit of {N_REPLAY:,} answers, one transaction each: {commit_s:.2f} s "
          f"({1e6 * commit_s / N_REPLAY:.0f} us per answer)")
    print(f"replay of {N_REPLAY:,} cached requests: {elapsed:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: the RG workload of bench_mining.py (the first 5 train dialogues of the paper's split, 90 requests,
max_tokens 160) on vLLM (its CPU build here, a GPU where there is one) and on the embedded llama.cpp engine, with
our scheduling (a dialogue's requests in turn order on one stream); then the 135M judge on vLLM over 60 of the
pairs, with JSON whitespace free (vLLM's default) and fixed (ours), counted by outcome.

Prints, from the same run: wall time (engine start apart), output tokens/s, the share of prompt tokens served from
the prefix cache, and the judge's outcomes. Runs in .venv-vllm (make bench-vllm). ``--dtype D`` (repeatable) runs
the vLLM RG workload in each dtype, one after the other in the same run (the judge in the first); without it, in
the engine's default (on a CPU: bfloat16 where the processor computes it natively, float32 elsewhere).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections import Counter

from bench_mining import DIALOGUES, rg_requests

from ipm_prefdial.convert import turns
from ipm_prefdial.engines.local import LocalEngine
from ipm_prefdial.engines.requests import Sampling
from ipm_prefdial.engines.runner import Stats, run_requests
from ipm_prefdial.engines.vllm_engine import VLLMEngine
from ipm_prefdial.mining.judge import judge_request, judge_status
from ipm_prefdial.mining.policy import PolicySampling, make_pair
from ipm_prefdial.prompts import Prompts
from ipm_prefdial.sources import load_source
from ipm_prefdial.splits import assign, split_ids

JUDGED = 60


async def timed(engine, requests) -> tuple[list, Stats, float, float]:
    """(results, stats, start-up seconds, wall seconds of the requests)."""
    t0 = time.perf_counter()
    await engine.start()
    startup = time.perf_counter() - t0
    try:
        stats = Stats()
        t1 = time.perf_counter()
        results = await run_requests(engine, requests, stats=stats)  # no request cache: every request is sent
        return results, stats, startup, time.perf_counter() - t1
    finally:
        await engine.close()


def line(name: str, stats: Stats, startup: float, wall: float) -> str:
    share = stats.cached_prompt_tokens / max(stats.prompt_tokens, 1)
    return (f"{name:28s} start {startup:5.1f} s  wall {wall:6.1f} s  {stats.completion_tokens / wall:6.1f} output "
            f"tokens/s  prompt tokens {stats.prompt_tokens:,}, {share:.0%} from the prefix cache  failures "
            f"{dict(stats.failures) or 0}")


def judge_requests(requests, results, engine) -> list:
    """Judge requests of the first JUDGED pairs the vLLM answers make."""
    source = load_source("esconv", os.environ["IPM_ESCONV_PATH"])
    train = assign(source, split_ids("decoupledesc", source), DIALOGUES)["train"]
    all_turns = [t for d in train for t in turns(d)]
    prompts, sampling = Prompts(), Sampling(0.0, 1.0, 320)
    out = []
    for turn, request, result in zip(all_turns, requests, results, strict=True):
        row, _ = make_pair("rg", turn, request, result, {"engine": "vllm", "model": "m"}, engine.identity)
        if row is not None:
            out.append(judge_request("response_pairs", row, turn, prompts, sampling))
    return out[:JUDGED]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", action="append", default=[],
                        help="vLLM's dtype for the RG workload (repeatable; default: the engine's choice)")
    dtypes = parser.parse_args().dtype or [None]
    requests = rg_requests()
    print(f"RG mining, first 5 train dialogues: {len(requests)} requests, max_tokens "
          f"{requests[0].sampling.max_tokens}, temperature {PolicySampling().temperature}")
    _, stats, startup, wall = asyncio.run(timed(LocalEngine(slots=4), requests))
    print(line("embedded (4 slots)", stats, startup, wall))
    chosen = {"dtype": dtypes[0]} if dtypes[0] else {}
    first = None
    for dtype in dtypes:
        vllm = VLLMEngine(**({"dtype": dtype} if dtype else {}))
        results, stats, startup, wall = asyncio.run(timed(vllm, requests))
        print(line(f"vLLM {vllm.runtime.dtype()} ({vllm.concurrency} streams)", stats, startup, wall))
        first = first or (vllm, results)

    vllm, results = first
    judge = judge_requests(requests, results, vllm)
    print(f"judge on vLLM (the same 135M model), {len(judge)} verdicts, max_tokens 320:")
    for name, whitespace_fixed in (("free JSON whitespace", False), ("fixed JSON whitespace", True)):
        engine = VLLMEngine(**chosen, structured_outputs_config={"backend": "guidance",
                                                                "disable_any_whitespace": whitespace_fixed})
        verdicts, stats, startup, wall = asyncio.run(timed(engine, judge))
        outcomes = Counter(judge_status(r) for r in verdicts)
        print(f"  {name:22s} {dict(sorted(outcomes.items()))}  {stats.completion_tokens / len(judge):.0f} tokens per "
              f"verdict, wall {wall:.1f} s")


if __name__ == "__main__":
    main()

"""Benchmark: RG mining of the first 5 train dialogues (the paper's split) on the embedded engine, with our
scheduling (each dialogue on one stream in turn order, 4 slots) versus the same requests sent one at a time in
shuffled order. Each mode gets a fresh server, so no prompt cache carries over. Prints wall time, prompt tokens
and cached prompt tokens of both, and the ratios the project promises (>= 75% cached, <= 0.6 of the wall time).

    IPM_ESCONV_PATH=../shared/data/esconv/ESConv.reconstructed.json python benchmarks/bench_mining.py
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import time
from dataclasses import replace

from ipm_prefdial.convert import turns
from ipm_prefdial.engines.local import LocalEngine
from ipm_prefdial.engines.runner import Stats, run_requests
from ipm_prefdial.mining.policy import PolicySampling, policy_requests
from ipm_prefdial.prompts import Prompts
from ipm_prefdial.sources import load_source
from ipm_prefdial.splits import assign, split_ids

DIALOGUES = 5


def rg_requests():
    path = os.environ.get("IPM_ESCONV_PATH")
    if not path:
        sys.exit("set IPM_ESCONV_PATH to ESConv.json (e.g. ../shared/data/esconv/ESConv.reconstructed.json)")
    source = load_source("esconv", path)
    train = assign(source, split_ids("decoupledesc", source), DIALOGUES)["train"]
    prompts, policy = Prompts(), PolicySampling()
    return [r for d in train for t in turns(d) for r in policy_requests("rg", t, prompts, policy)]


async def run(requests, slots: int) -> tuple[Stats, float]:
    engine = LocalEngine(slots=slots)
    await engine.start()
    try:
        stats = Stats()
        started = time.perf_counter()
        await run_requests(engine, requests, stats=stats)  # no request cache: every request is sent
        return stats, time.perf_counter() - started
    finally:
        await engine.close()


def main() -> None:
    ordered = rg_requests()
    shuffled = list(ordered)
    random.Random(0).shuffle(shuffled)
    shuffled = [replace(r, group=None) for r in shuffled]  # no grouping: one request after another
    print(f"RG mining, first {DIALOGUES} train dialogues: {len(ordered)} requests, max_tokens "
          f"{ordered[0].sampling.max_tokens}")
    figures = {}
    for name, requests, slots in (("shuffled, one at a time", shuffled, 1), ("ours (grouped, 4 slots)", ordered, 4)):
        stats, wall = asyncio.run(run(requests, slots))
        share = stats.cached_prompt_tokens / max(stats.prompt_tokens, 1)
        figures[name] = (wall, share)
        print(f"{name:26s} wall {wall:7.1f} s  prompt tokens {stats.prompt_tokens:7,}  cached "
              f"{stats.cached_prompt_tokens:7,} ({share:.0%})  completion tokens {stats.completion_tokens:6,}  "
              f"failures {dict(stats.failures)}")
    (base_wall, _), (our_wall, our_share) = figures.values()
    print(f"ours: {our_share:.0%} of prompt tokens cached (goal >= 75%), wall time {our_wall / base_wall:.2f} of "
          f"shuffled (goal <= 0.60)")


if __name__ == "__main__":
    main()

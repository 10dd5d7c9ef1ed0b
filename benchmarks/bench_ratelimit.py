"""Benchmark: a build against a rate-limited API. The package's test server lets in ``--rpm`` requests a minute (a
token bucket, OpenAI's ``x-ratelimit-*`` headers on every answer, 429 with ``retry-after-ms`` / ``retry-after``
beyond it) and answers each request after ``--latency`` seconds; ``ipm build --limit 2 --stage all --engine openai``
runs against it at several ``--concurrency`` values.

Prints, per run: requests that reached the server, the share answered 429, the rate of answers over the build's
span as a share of the allowed rate, the build's wall time and exit code. The goal of issue 25: at 600 requests a
minute and ``--concurrency 32``, at most 5% of requests answered 429 while keeping at least 0.9 of the allowed rate.
Reads ESConv from IPM_ESCONV_PATH (``make bench`` sets it).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ipm_prefdial.engines.vllm_engine import cpu_flags
from ipm_prefdial.testing.fake_llm import FakeLLM

RUNS = ((600, 32), (600, 8), (1200, 64))  # (requests a minute, --concurrency)


def host() -> str:
    try:
        flags = cpu_flags(Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace"))
    except OSError:
        flags = ""
    avx = sorted({f for f in flags.split() if f.startswith("avx")})
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {' '.join(avx) or 'no avx flags'}"


def run(source: str, rpm: int, concurrency: int, latency: float, limit: int) -> dict:
    server = FakeLLM(latency=latency, rpm=rpm)
    with tempfile.TemporaryDirectory() as tmp, server as url:
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "ipm_prefdial.cli", "build", "--source", "esconv",
                               "--source-path", source, "--limit", str(limit), "--stage", "all", "--engine",
                               "openai", "--base-url", url, "--concurrency", str(concurrency), "--out",
                               f"{tmp}/ds", "--cache-dir", f"{tmp}/cache"], capture_output=True, text=True)
        wall = time.perf_counter() - started
        arrivals = sorted(server.arrivals)
    span = (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else float("nan")
    return {"rpm": rpm, "concurrency": concurrency, "requests": len(arrivals), "answered": server.answered,
            "limited": server.rate_limited, "span": span, "wall": wall, "exit": done.returncode,
            "tail": done.stderr[-400:] if done.returncode else ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the server takes per answer")
    parser.add_argument("--limit", type=int, default=2, help="ipm build --limit")
    args = parser.parse_args()
    source = os.environ.get("IPM_ESCONV_PATH")
    if not source:
        print("set IPM_ESCONV_PATH to a local ESConv.json (make bench does)", file=sys.stderr)
        return 2
    print(f"host: {host()}")
    print(f"ipm build --source esconv --limit {args.limit} --stage all --engine openai; server latency "
          f"{args.latency:g} s, a token bucket of one second of requests")
    for rpm, concurrency in RUNS:
        r = run(source, rpm, concurrency, args.latency, args.limit)
        rate = r["answered"] / r["span"] / (rpm / 60) if r["span"] > 0 else float("nan")
        print(f"{rpm:>5} rpm  --concurrency {concurrency:>2}: {r['requests']:>4} requests, {r['limited']:>4} answered "
              f"429 ({r['limited'] / max(r['requests'], 1):.0%}), {r['answered']} answered at {rate:.2f} of the "
              f"allowed rate; build {r['wall']:.1f} s, exit {r['exit']}", flush=True)
        if r["tail"]:
            print("  " + r["tail"].strip().replace("\n", "\n  "))
    return 0


if __name__ == "__main__":
    sys.exit(main())

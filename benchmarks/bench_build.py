"""Benchmark: the full SFT build of ESConv (paper split) and its validation, on this machine.

Reads ESConv from IPM_ESCONV_PATH (the Makefile points it at ../shared). Prints wall times; the goal of
issue 2 is a full SFT build under 30 s on a 2-core machine.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from ipm_prefdial.build import build
from ipm_prefdial.config import BuildConfig
from ipm_prefdial.validate import validate

RUNS = 3


def main() -> int:
    source = os.environ.get("IPM_ESCONV_PATH")
    if not source:
        print("set IPM_ESCONV_PATH to a local ESConv.json (make bench does)", file=sys.stderr)
        return 2
    quiet = Console(stderr=True, quiet=True)
    times, digests = [], set()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ipm_prefdial"
        for _ in range(RUNS):
            started = time.perf_counter()
            result = build(BuildConfig(stage="sft", source_path=source, out=str(out)), console=quiet)
            times.append(time.perf_counter() - started)
            digests.add(tuple(sorted((k, v["sha256"]) for k, v in result.manifest["files"].items())))
        started = time.perf_counter()
        report = validate(out)
        validate_s = time.perf_counter() - started
    rows = sum(sum(v.values()) for v in result.manifest["counts"].values())
    print(f"sft build (ESConv, decoupledesc split, {rows:,} rows in 3 configs): "
          f"median {statistics.median(times):.2f} s, min {min(times):.2f} s over {RUNS} runs "
          f"({rows / min(times):,.0f} rows/s); cpu count {os.cpu_count()}")
    print(f"rebuilds byte-identical: {len(digests) == 1}")
    print(f"ipm validate: {validate_s:.2f} s, {'valid' if report.ok else 'INVALID'}")
    return 0 if report.ok and len(digests) == 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())

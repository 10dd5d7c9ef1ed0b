"""Helpers of the executor tests (tests/executors/)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import ESCONV_JSON, IPM


def build(url: str, out: Path, cache: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """`ipm build --stage all --limit 3` against the test server, in a process of its own (its own local Ray)."""
    args = [*IPM, "build", "--source-path", str(ESCONV_JSON), "--stage", "all", "--limit", "3", "--engine", "openai",
            "--base-url", url, "--concurrency", "4", "--trim-tokenizer", "none", "--out", str(out),
            "--cache-dir", str(cache), *extra]
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result

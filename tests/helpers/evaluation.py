"""Helpers of the evaluation tests (tests/evaluation/)."""

from __future__ import annotations

from typer.testing import CliRunner

from ipm_prefdial.cli import app

TURNS = 4  # the test turns `ipm infer` answers in the end-to-end tests (test_eval_e2e.py)


def infer_all(data, root, engine: list[str]) -> dict:
    """`ipm infer` of the three systems on the first TURNS test turns of ``data``, on the engine ``engine`` names."""
    cache = root / "cache"
    files = {}
    for system in ("decoupled", "joint", "rg-gold"):
        out = root / f"{system}.jsonl"
        result = CliRunner().invoke(app, ["infer", "--data", str(data), "--system", system, "--limit", str(TURNS),
                                          "--out", str(out), "--cache-dir", str(cache), "--rg-max-tokens", "40",
                                          "--vm-max-tokens", "48", *engine])
        assert result.exit_code == 0, result.output
        assert f"{TURNS} predictions" in result.output
        files[system] = out
    return {"files": files, "cache": cache, "root": root, "data": data, "engine": engine}

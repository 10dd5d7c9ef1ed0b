"""Fixtures of the tests in tests/evaluation/: the predictions of test_eval_e2e.py."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from helpers.evaluation import TURNS
from ipm_prefdial.cli import app


@pytest.fixture(scope="module")
def predictions(esconv_build, tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    cache = root / "cache"
    files = {}
    for system in ("decoupled", "joint", "rg-gold"):
        out = root / f"{system}.jsonl"
        result = CliRunner().invoke(app, ["infer", "--data", str(esconv_build), "--system", system, "--limit",
                                          str(TURNS), "--out", str(out), "--cache-dir", str(cache), "--rg-max-tokens",
                                          "40", "--vm-max-tokens", "48"])
        assert result.exit_code == 0, result.output
        assert f"{TURNS} predictions" in result.output
        files[system] = out
    return {"files": files, "cache": cache, "root": root}

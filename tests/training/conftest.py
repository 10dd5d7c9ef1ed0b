"""Fixtures of the tests in tests/training/: the trained run of test_train.py (slow: SFT and DPO training) and the
dequantised base model both test modules train from."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from ipm_prefdial.cli import app


@pytest.fixture(scope="session")
def base_cache(smollm2, tmp_path_factory):
    """Where the bundled model is dequantised once for every training test (--cache-dir of ipm train and ipm
    reproduce)."""
    return tmp_path_factory.mktemp("base-model")


@pytest.fixture(scope="module")
def trained_run(pairs_build, base_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    # the system prompts alone are ~270 tokens: 384 leaves the current turn and a short answer. Two examples and two
    # pairs, one step each, and the joint model only: every part of ipm train runs (SFT, DPO, the final adapter,
    # inference, the report); SP and RG train in test_reproduce.py, which runs the same recipe
    tiny = {"max_length": 384, "sft": {"max_examples": 2, "batch_size": 2, "learning_rate": 1e-3},
            "dpo": {"max_examples": 2, "batch_size": 2, "learning_rate": 2e-3, "epochs": 1},
            "heldout_pairs": 1, "test_turns": 2, "eval_max_tokens": 8, "min_retained": 4}
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny))
    out = root / "run"
    result = CliRunner().invoke(app, ["train", "--quick", "--data", str(pairs_build["out"]), "--config", str(config),
                                      "--arms", "joint", "--out", str(out), "--cache-dir", str(base_cache)])
    assert result.exit_code == 0, result.output
    return {"out": out, "output": result.output, "metrics": json.loads((out / "metrics.json").read_text())}

"""`ipm train` in miniature on the real small model: SFT and DPO of the joint model VM, its final adapter, evaluation,
report (SP and RG train with the same recipe in test_reproduce.py)."""

from __future__ import annotations

import json
import math
import re

import pytest
from typer.testing import CliRunner

from helpers import ROOT
from ipm_prefdial.cli import app
from ipm_prefdial.training.config import TrainConfig, TrainConfigError
from ipm_prefdial.training.data import fit_prompt, select_pairs
from ipm_prefdial.training.run import non_finite

KEYS = [f"vm.{k}" for k in (
    "sft.train_loss_first", "sft.train_loss_last", "dpo.eval_reward_accuracy", "dpo.eval_reward_margin",
    "dpo.heldout_pref_accuracy_before", "dpo.heldout_pref_accuracy_after", "dpo.pairs_used", "dpo.pairs_source")]
TESTS = ["joint.test.sft", "joint.test.dpo"]


def get(obj, dotted):
    for part in dotted.split("."):
        obj = obj[part]
    return obj


def test_every_metrics_key_exists_and_is_finite(trained_run):
    m = trained_run["metrics"]
    for key in KEYS:
        value = get(m, key)
        assert value is not None, key
        if isinstance(value, float):
            assert math.isfinite(value), key
    for key in TESTS:
        assert math.isfinite(get(m, key + ".strategy.lenient.Q")) and get(m, key + ".turns") == 2
        assert math.isfinite(get(m, key + ".reference.bleu-2"))
    assert non_finite(m) == []
    assert m["vm"]["dpo"]["pairs_source"] in ("retained", "all")
    assert "sp" not in m and "decoupled" not in m  # --arms joint
    assert set(m["comparisons"]) == {"joint DPO - joint SFT"}
    assert set(m["comparisons"]["joint DPO - joint SFT"]["strategy"]["lenient"]["B"]) == {"diff", "ci95", "p"}


def test_dpo_moves_the_margin_on_its_training_pairs(trained_run):
    for task in ("vm",):
        dpo = trained_run["metrics"][task]["dpo"]
        assert dpo["train_margin_after"] > dpo["train_margin_before"], (task, dpo)
        assert dpo["pairs_used"] > 0 and dpo["steps"] > 0


def test_outputs_and_checkpoints(trained_run):
    out = trained_run["out"]
    for task in ("vm",):
        assert (out / task / "sft" / "config.json").is_file()  # merged SFT model: the DPO reference
        adapter = json.loads((out / task / "dpo" / "adapter_config.json").read_text())
        assert adapter["base_model_name_or_path"] == str(out / task / "sft")
        # SFT then DPO as one adapter on the original base (rank 8 + 8 in --quick): the model vLLM serves
        final = json.loads((out / task / "final" / "adapter_config.json").read_text())
        assert final["base_model_name_or_path"] == trained_run["metrics"]["base_model"] and final["r"] == 16
        assert trained_run["metrics"][task]["final"]["max_abs_logit_diff"] < 1e-3  # fp32: equal up to rounding
    report = (out / "report.md").read_text()
    assert "Decoupled vs joint" in report and "held-out pref. acc." in report and "--quick" in report
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "Paired differences" in report and "| joint DPO - joint SFT |" in report
    assert len((out / "predictions" / "joint-dpo.jsonl").read_text().splitlines()) == 2
    assert "caps:" in trained_run["output"] and "joint DPO: Q" in trained_run["output"]


def test_trained_models_serve_as_mining_policies(trained_run):
    """The paper's loop closes: the DPO adapter answers through the transformers engine."""
    from ipm_prefdial.engines import EngineSpec, make_engine
    from ipm_prefdial.engines.requests import ChatRequest, Choice, Sampling
    from ipm_prefdial.engines.runner import run_sync
    from ipm_prefdial.strategies import STRATEGIES

    engine = make_engine(EngineSpec("transformers", model=str(trained_run["out"] / "vm" / "dpo")))
    request = ChatRequest.chat([{"role": "system", "content": "Pick a strategy."},
                                {"role": "user", "content": "seeker: I feel lonely."}],
                               sampling=Sampling(0.0, 1.0, 8), output=Choice(STRATEGIES))
    [result] = run_sync(engine, [request])
    assert result.ok and result.parsed in STRATEGIES
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\+adapter:sha256:[0-9a-f]{64}", engine.identity)
    assert re.fullmatch(r"vm/dpo@[0-9a-f]{12}", engine.display_name)


def test_pair_selection_falls_back_and_says_so():
    judged = [{"judge": {"retained": i < 3}} for i in range(10)] + [{"judge": None}]
    few = select_pairs("rg", judged, "retained", min_retained=5)
    assert few.source == "all" and len(few.rows) == 11 and "only 3 of 11" in few.note
    enough = select_pairs("vm", judged, "retained", min_retained=3)
    assert enough.source == "retained" and len(enough.rows) == 3
    assert select_pairs("sp", judged, "retained", 5).source == "all"
    assert select_pairs("rg", judged, "all", 5).rows == judged


def test_prompts_lose_their_oldest_history_first():
    count = lambda messages: sum(len(m["content"].split()) for m in messages)  # noqa: E731 - a word counter
    chat = [{"role": "system", "content": "sys"}, {"role": "user", "content": "one two three"},
            {"role": "assistant", "content": "four five"}, {"role": "user", "content": "six seven"}]
    fitted = fit_prompt(chat, answer_tokens=2, max_length=5, count=count)
    assert fitted == [chat[0], chat[3]]  # the oldest exchange went, the system prompt and current turn stayed
    sp = [{"role": "system", "content": "s"}, {"role": "user", "content": "seeker: a b\nsupporter: c d\nseeker: e"}]
    assert fit_prompt(sp, 1, 7, count)[1]["content"] == "supporter: c d\nseeker: e"  # 1 + 5 words fit 7 - 1
    assert fit_prompt(sp, 1, 4, count)[1]["content"] == "seeker: e"  # the current line always stays


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(TrainConfigError, match="unknown option 'epochz'"):
        TrainConfig.quick(epochz=3)
    bad = tmp_path / "bad.yaml"
    bad.write_text("sft: {lr: 1}\n")
    with pytest.raises(TrainConfigError, match=r"bad.yaml: sft: unknown option\(s\) lr"):
        TrainConfig.load(bad)
    with pytest.raises(TrainConfigError, match="arms"):
        TrainConfig.quick(arms="both")
    gpu = TrainConfig.load(ROOT / "configs" / "train_gpu.yaml")
    assert gpu.gradient_checkpointing and gpu.sft.max_examples is None and gpu.base_model.startswith("Qwen/")


def test_missing_config_is_named(tmp_path, sft_build):
    result = CliRunner().invoke(app, ["train", "--quick", "--data", str(sft_build), "--out", str(tmp_path / "r"),
                                      "--arms", "joint"])
    assert result.exit_code == 1  # bad input: the build
    assert "the build has no joint_pairs config" in result.output
    assert not (tmp_path / "r").exists()  # nothing written before the data was checked

"""`ipm infer` and `ipm eval` end to end on a few test turns: on the full build with the embedded engine and the real
model, and (the fast twins) on the small build against the test server."""

from __future__ import annotations

import json
import math
import re

import pyarrow.parquet as pq
from typer.testing import CliRunner

from helpers.evaluation import TURNS
from ipm_prefdial.cli import app
from ipm_prefdial.evaluation.evaluate import flatten, read_predictions
from ipm_prefdial.evaluation.infer import PREDICTION_FIELDS
from ipm_prefdial.strategies import STRATEGIES

runner = CliRunner()


def check_fields(predictions: dict) -> None:
    gold = pq.read_table(predictions["data"] / "data/response_sft/test-00000-of-00001.parquet").to_pylist()[:TURNS]
    for system, path in predictions["files"].items():
        rows = read_predictions(path)
        assert [r["id"] for r in rows] == [g["id"] for g in gold]
        for row, g in zip(rows, gold, strict=True):
            assert set(PREDICTION_FIELDS) <= set(row) and row["system"] == system
            assert row["strategy"] == g["strategy"] and row["response"] == g["completion"][0]["content"]
            assert row["context"]  # the dialogue, for a judge
        if system == "decoupled":
            assert all(r["predicted_strategy"] in STRATEGIES for r in rows)  # constrained SP
        if system == "rg-gold":
            assert all(r["predicted_strategy"] == r["strategy"] for r in rows)
        assert sum(bool(r["predicted_response"]) for r in rows) >= TURNS - 1, rows


def test_predictions_have_the_fixed_fields(predictions):
    check_fields(predictions)


def test_predictions_on_the_test_server_have_the_fixed_fields(fake_predictions):
    check_fields(fake_predictions)


def check_rerun(predictions: dict, tmp_path) -> None:
    out = tmp_path / "again.jsonl"
    result = runner.invoke(app, ["infer", "--data", str(predictions["data"]), "--system", "decoupled", "--limit",
                                 str(TURNS), "--out", str(out), "--cache-dir", str(predictions["cache"]),
                                 "--rg-max-tokens", "40", *predictions["engine"]])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "SP: 4 requests (4 cached, 0 sent)" in text
    assert re.search(r"RG: 4 requests \((\d) cached, (?:(\d) failures replayed, )?0 sent\)", text), text
    assert out.read_text() == predictions["files"]["decoupled"].read_text()


def test_rerun_of_infer_is_served_from_the_cache(predictions, tmp_path):
    check_rerun(predictions, tmp_path)


def test_rerun_of_infer_on_the_test_server_is_served_from_the_cache(fake_predictions, tmp_path):
    check_rerun(fake_predictions, tmp_path)


def check_eval(predictions: dict, tmp_path) -> None:
    files = predictions["files"]
    one = tmp_path / "decoupled.json"
    result = runner.invoke(app, ["eval", "--predictions", str(files["decoupled"]), "--json", str(one)])
    assert result.exit_code == 0, result.output
    flat = flatten(json.loads(one.read_text()))
    for key in ("strategy.lenient.Q", "strategy.lenient.weighted_f1", "strategy.lenient.B",
                "strategy.lenient.dropped_ratio", "strategy.strict.Q", "strategy.strict.B", "reference.bleu-1",
                "reference.bleu-4", "reference.dist-1", "reference.dist-3", "reference.rouge-l", "reference.f1",
                "reference.length"):
        assert math.isfinite(flat[key]), key
    assert all(f"strategy.lenient.preference.{s}" in flat for s in STRATEGIES)

    report = tmp_path / "report"
    both = tmp_path / "both.json"
    result = runner.invoke(app, ["eval", "--predictions", str(files["decoupled"]), str(files["joint"]),
                                 str(files["rg-gold"]), "--json", str(both), "--report", str(report)])
    assert result.exit_code == 0, result.output
    systems = json.loads(both.read_text())
    assert list(systems) == ["decoupled", "joint", "rg-gold"]
    assert systems["rg-gold"]["strategy"]["lenient"]["Q"] == 100.0
    md = (report / "report.md").read_text()
    assert "| metric | decoupled | joint | rg-gold |" in md and "B (bias, lenient)" in md
    png = (report / "preference.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_eval_writes_json_markdown_and_chart(predictions, tmp_path):
    check_eval(predictions, tmp_path)


def test_eval_of_the_test_server_predictions_writes_json_markdown_and_chart(fake_predictions, tmp_path):
    check_eval(fake_predictions, tmp_path)


def check_judge(predictions: dict, judge: list[str], tmp_path) -> dict:
    out = tmp_path / "judged.json"
    result = runner.invoke(app, ["eval", "--predictions", str(predictions["files"]["rg-gold"]), *judge,
                                 "--cache-dir", str(predictions["cache"]), "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    details = data["judge_details"]
    assert details["accounting"]["requests"] == 4 * TURNS
    for dim in ("fluency", "professionalism", "empathy", "helpfulness"):
        score, unparsed = data["judge"][dim], details["unparsed"][dim]
        assert 0 <= unparsed <= TURNS
        assert score is None if unparsed == TURNS else 0.0 <= score <= 5.0
    return data


def test_eval_with_the_embedded_judge(predictions, tmp_path):
    check_judge(predictions, ["--judge-engine", "local"], tmp_path)


def test_eval_with_a_judge_on_the_test_server(fake_predictions, fake_llm, tmp_path):
    data = check_judge(fake_predictions, ["--judge-engine", "openai", "--judge-base-url", fake_llm["url"]], tmp_path)
    assert data["judge_details"]["judge"] == "openai:fake-llm"
    assert data["judge_details"]["unparsed"] == {"fluency": 0, "professionalism": 0, "empathy": 0, "helpfulness": 0}


def test_infer_needs_a_build(tmp_path):
    result = runner.invoke(app, ["infer", "--data", str(tmp_path), "--system", "joint", "--out",
                                 str(tmp_path / "p.jsonl")])
    assert result.exit_code == 2
    assert f"--data {tmp_path}: not a build directory (no manifest.json)" in " ".join(result.output.split())

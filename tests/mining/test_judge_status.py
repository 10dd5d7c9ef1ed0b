"""Whether the judge ran, failed (and how), was skipped or does not apply is a column of every pair config,
checked by `ipm validate` and counted on the card. Builds on the deterministic test server."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from helpers import fake_build_args
from ipm_prefdial.cli import app
from ipm_prefdial.release.features import FEATURES
from ipm_prefdial.release.files import sha256_file
from ipm_prefdial.validate import validate

runner = CliRunner()
PAIRS = ("strategy_pairs", "response_pairs", "joint_pairs")


def rows(out, config, split="train"):
    return pq.read_table(out / f"data/{config}/{split}-00000-of-00001.parquet").to_pylist()


def statuses(out, config) -> Counter:
    return Counter(r["judge_status"] for split in ("train", "validation") for r in rows(out, config, split))


def test_judged_build_marks_every_row(fake_pairs_build):
    out = fake_pairs_build["out"]
    for config in PAIRS:
        assert "judge_status" in pq.read_schema(out / f"data/{config}/train-00000-of-00001.parquet").names
    assert set(statuses(out, "strategy_pairs")) == {"not_applicable"}
    for config in ("response_pairs", "joint_pairs"):
        for r in rows(out, config):
            assert (r["judge_status"] == "judged") == (r["judge"] is not None), r["id"]
        assert statuses(out, config)["judged"] > 0
    card = (out / "README.md").read_text()
    n = sum(statuses(out, "strategy_pairs").values())
    assert f"| `strategy_pairs` | not_applicable {n} |" in card


def test_no_judge_is_skipped_and_a_failed_judge_is_not_mistaken_for_it(fake_llm, tmp_path):
    skipped = tmp_path / "skipped"
    result = runner.invoke(app, [*fake_build_args(fake_llm["url"], "--no-judge"), "--out", str(skipped),
                                 "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    for config in ("response_pairs", "joint_pairs"):
        assert set(statuses(skipped, config)) == {"skipped"}
    assert validate(skipped).ok
    failed = tmp_path / "failed"  # 5 tokens cannot hold a verdict: every judge answer is cut at max_tokens
    result = runner.invoke(app, [*fake_build_args(fake_llm["url"], "--judge-max-tokens", "5"), "--out", str(failed),
                                 "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    for config in ("response_pairs", "joint_pairs"):
        assert set(statuses(failed, config)) == {"failed:truncated"}
        assert all(r["judge"] is None for r in rows(failed, config))
    assert validate(failed).ok
    m = json.loads((failed / "manifest.json").read_text())
    assert m["judge"]["response_pairs"]["status"] == {"failed:truncated": sum(m["counts"]["response_pairs"].values())}
    card = (failed / "README.md").read_text()
    assert f"| `joint_pairs` | failed:truncated {sum(m['counts']['joint_pairs'].values())} |" in card


def test_validate_checks_the_status_against_the_verdict(fake_pairs_build, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(fake_pairs_build["out"], ds)
    rel = "data/response_pairs/train-00000-of-00001.parquet"
    data = rows(ds, "response_pairs")
    judged = [r for r in data if r["judge"] is not None]
    judged[0]["judge_status"] = "skipped"  # a verdict with a status that says none ran
    judged[1]["judge"] = None  # "judged" without a verdict
    judged[2]["judge_status"] = "maybe"
    pq.write_table(pa.Table.from_pylist(data, schema=FEATURES["response_pairs"].arrow_schema), ds / rel)
    sp_rel = "data/strategy_pairs/train-00000-of-00001.parquet"
    sp = rows(ds, "strategy_pairs")
    sp[0]["judge_status"] = "judged"
    pq.write_table(pa.Table.from_pylist(sp, schema=FEATURES["strategy_pairs"].arrow_schema), ds / sp_rel)
    m = json.loads((ds / "manifest.json").read_text())
    for r in (rel, sp_rel):
        m["files"][r]["sha256"] = sha256_file(ds / r)
    (ds / "manifest.json").write_text(json.dumps(m))
    lines = validate(ds).lines()
    rule = "judge is set exactly when judge_status is 'judged'"
    assert any(line.startswith(rule) and judged[0]["id"] in line and judged[1]["id"] in line for line in lines), lines
    assert any(line.startswith("judge_status is not judged, failed:<kind>, skipped or not_applicable")
               and judged[2]["id"] in line for line in lines), lines
    assert any(line.startswith("strategy pair whose judge_status is not not_applicable") and sp[0]["id"] in line
               for line in lines), lines

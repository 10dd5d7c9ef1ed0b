"""`response_pairs_retained` and `joint_pairs_retained`: the judge-retained rows of their config (the paper's
filtered DPO data), loadable by name as TRL's `--dataset_config` does."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from helpers import fake_build_args
from ipm_prefdial.cli import app
from ipm_prefdial.release.card import read_card_metadata
from ipm_prefdial.release.features import FEATURES
from ipm_prefdial.release.files import sha256_file
from ipm_prefdial.validate import validate


def rows(out, config, split):
    return pq.read_table(out / f"data/{config}/{split}-00000-of-00001.parquet").to_pylist()


def test_retained_configs_hold_exactly_the_retained_rows(fake_pairs_build):
    from datasets import load_dataset

    out = fake_pairs_build["out"]
    meta = read_card_metadata((out / "README.md").read_text())
    names = [c["config_name"] for c in meta["configs"]]
    assert names[-2:] == ["response_pairs_retained", "joint_pairs_retained"]
    for parent in ("response_pairs", "joint_pairs"):
        for split in ("train", "validation"):
            kept = [r for r in rows(out, parent, split) if r["judge"] is not None and r["judge"]["retained"]]
            assert rows(out, f"{parent}_retained", split) == kept
        ds = load_dataset(str(out), f"{parent}_retained", split="train")
        assert len(ds) == sum(1 for r in rows(out, parent, "train") if r["judge"] and r["judge"]["retained"]) > 0
        assert set(ds.column_names) == set(FEATURES[parent])
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["response_pairs_retained"]["train"] == m["judge"]["response_pairs"]["retained"] - \
        m["counts"]["response_pairs_retained"]["validation"]


def test_no_judge_build_has_no_retained_configs(fake_llm, tmp_path):
    out = tmp_path / "nojudge"
    result = CliRunner().invoke(app, [*fake_build_args(fake_llm["url"], "--no-judge"), "--out", str(out),
                                      "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert not (out / "data" / "response_pairs_retained").exists()
    assert "response_pairs_retained" not in json.loads((out / "manifest.json").read_text())["counts"]


def test_validate_names_a_row_that_was_not_retained(fake_pairs_build, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(fake_pairs_build["out"], ds)
    rel = "data/response_pairs_retained/train-00000-of-00001.parquet"
    kept = rows(ds, "response_pairs_retained", "train")
    intruder = next(r for r in rows(ds, "response_pairs", "train") if not (r["judge"] and r["judge"]["retained"]))
    dropped = kept[0]
    data = [*kept[1:], intruder]
    pq.write_table(pa.Table.from_pylist(data, schema=FEATURES["response_pairs"].arrow_schema), ds / rel)
    m = json.loads((ds / "manifest.json").read_text())
    m["files"][rel].update(sha256=sha256_file(ds / rel), rows=len(data))
    (ds / "manifest.json").write_text(json.dumps(m))
    lines = validate(ds).lines()
    assert any(line.startswith("response_pairs_retained/train is not the retained rows of response_pairs/train")
               and intruder["id"] in line and dropped["id"] in line for line in lines), lines


def test_empty_splits_are_neither_written_nor_listed(fake_llm, tmp_path):
    """load_dataset cannot open a split without rows: a judge that retains nothing gives retained configs that are
    counted 0 in the manifest and left out of the card, and the build stays valid and loadable."""
    from datasets import load_dataset

    out = tmp_path / "ds"
    result = CliRunner().invoke(app, [*fake_build_args(fake_llm["url"], "--judge-max-tokens", "5", "--limit", "1"),
                                      "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["response_pairs_retained"] == {"train": 0, "validation": 0}
    assert not (out / "data" / "response_pairs_retained").exists()
    names = [c["config_name"] for c in read_card_metadata((out / "README.md").read_text())["configs"]]
    assert "response_pairs_retained" not in names and "response_pairs" in names
    assert validate(out).ok, validate(out).lines()
    assert len(load_dataset(str(out), split="train")) == m["counts"]["response_pairs"]["train"]

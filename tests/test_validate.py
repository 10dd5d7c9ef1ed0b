"""`ipm validate` passes a fresh build and names each problem of a corrupted one."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from ipm_prefdial.cli import app
from ipm_prefdial.release.features import FEATURES
from ipm_prefdial.release.files import sha256_file
from ipm_prefdial.validate import validate

runner = CliRunner()
TRAIN = "data/strategy_sft/train-00000-of-00001.parquet"
TEST = "data/strategy_sft/test-00000-of-00001.parquet"


def rewrite(ds, rel, rows, *, fix_manifest: bool):
    pq.write_table(pa.Table.from_pylist(rows, schema=FEATURES["strategy_sft"].arrow_schema), ds / rel)
    if fix_manifest:  # a careful forger: only the row-level checks can catch it then
        manifest = json.loads((ds / "manifest.json").read_text())
        manifest["files"][rel].update(sha256=sha256_file(ds / rel), rows=len(rows))
        (ds / "manifest.json").write_text(json.dumps(manifest))


def rows(ds, rel):
    return pq.read_table(ds / rel).to_pylist()


def test_fresh_build_is_valid_and_cli_prints_a_summary(sft_build):
    report = validate(sft_build)
    assert report.ok, report.lines()
    result = runner.invoke(app, ["validate", str(sft_build)])
    assert result.exit_code == 0 and "strategy_sft" in result.output and "valid" in result.output


def test_edited_row_is_caught_by_the_manifest_hash(ds):
    data = rows(ds, TRAIN)
    data[0]["completion"] = [{"role": "assistant", "content": "Question" if data[0]["strategy"] != "Question"
                              else "Others"}]
    rewrite(ds, TRAIN, data, fix_manifest=False)
    lines = validate(ds).lines()
    assert any(TRAIN in line and "sha256" in line for line in lines), lines


def test_edited_row_with_forged_manifest_is_caught_by_the_rule(ds):
    data = rows(ds, TRAIN)
    data[0]["completion"] = [{"role": "assistant", "content": "Be happy"}]
    data[1]["prompt"] = data[1]["prompt"] + [{"role": "assistant", "content": "x"}]
    rewrite(ds, TRAIN, data, fix_manifest=True)
    lines = validate(ds).lines()
    assert any(line.startswith("SP completion is not the row's strategy name") and data[0]["id"] in line
               for line in lines), lines
    assert any(line.startswith("SP prompt is not system + one user message") and data[1]["id"] in line
               for line in lines), lines


def test_removed_file_is_named(ds):
    (ds / TEST).unlink()
    result = runner.invoke(app, ["validate", str(ds)])
    assert result.exit_code == 1
    assert f"{TEST}: listed in manifest.json but missing" in result.output
    assert "config strategy_sft split test: no file matches" in result.output


def test_dialogue_leaked_across_splits_is_named(ds):
    train, test = rows(ds, TRAIN), rows(ds, TEST)
    leaked = dict(train[0], id=f"{train[0]['dialog_id']}-9999", turn_index=9999)
    rewrite(ds, TEST, test + [leaked], fix_manifest=True)
    lines = validate(ds).lines()
    assert any(line.startswith("dialogue in two splits") and f"dialog_id {train[0]['dialog_id']}" in line
               for line in lines), lines
    assert any("turns differ from strategy_sft/test" in line for line in lines), lines


def test_unlisted_file_and_card_mismatch_are_named(ds):
    shutil.copy(ds / TEST, ds / "data/strategy_sft/extra-00000-of-00001.parquet")
    card = (ds / "README.md").read_text().replace("license: cc-by-nc-4.0", "license: mit")
    (ds / "README.md").write_text(card)
    lines = validate(ds).lines()
    assert "data/strategy_sft/extra-00000-of-00001.parquet: not listed in manifest.json" in lines
    assert "data/strategy_sft/extra-00000-of-00001.parquet: not part of any config in README.md" in lines
    assert any("license is 'mit'" in line for line in lines)


def test_missing_manifest_and_wrong_schema(ds):
    (ds / "manifest.json").unlink()
    table = pq.read_table(ds / TRAIN).drop_columns(["emotion_type"])
    pq.write_table(table, ds / TRAIN)
    lines = validate(ds).lines()
    assert any("manifest.json: missing" in line for line in lines)
    assert any(line.startswith(f"{TRAIN}: schema differs") for line in lines)

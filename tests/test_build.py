"""`ipm build --stage sft` end to end: counts, determinism, the card, load_dataset, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from helpers import ESCONV_DIR, ESCONV_JSON, HUB_DIR, plain
from ipm_prefdial.build import build
from ipm_prefdial.cli import app
from ipm_prefdial.config import BuildConfig
from ipm_prefdial.errors import ConfigError
from ipm_prefdial.release.card import read_card_metadata
from ipm_prefdial.release.features import SFT_CONFIGS

runner = CliRunner()
FULL = {"train": 14763, "validation": 1821, "test": 1792}  # the paper's split, every dialogue
SMALL = {"train": 81, "validation": 61, "test": 64}  # its first 4 dialogues per split (the sft_build fixture)


def counts(out) -> dict:
    return json.loads((out / "manifest.json").read_text())["counts"]


def parquet_bytes(out) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "data").rglob("*.parquet"))}


def test_paper_split_counts(esconv_build):
    for config in SFT_CONFIGS:
        assert counts(esconv_build)[config] == FULL
    manifest = json.loads((esconv_build / "manifest.json").read_text())
    assert manifest["split"]["dialogues"] == {"train": 1040, "validation": 130, "test": 130}
    assert sum(manifest["strategy_distribution"]["test"].values()) == 1792


def test_hub_layout_with_hf_split_via_cli(tmp_path):
    out = tmp_path / "hub"
    result = runner.invoke(app, ["build", "--source", "esconv", "--source-path", str(HUB_DIR), "--split", "hf",
                                 "--stage", "sft", "--out", str(out), "--trim-tokenizer", "none"])
    assert result.exit_code == 0, result.output
    assert "12,759" in result.output
    for config in SFT_CONFIGS:
        assert counts(out)[config] == {"train": 12759, "validation": 2722, "test": 2895}
    # the same split reproduced by code from the JSON list gives the same bytes
    again = tmp_path / "json"
    build(BuildConfig(stage="sft", source_path=str(ESCONV_JSON), split="hf", out=str(again), trim_tokenizer="none"))
    assert parquet_bytes(again) == parquet_bytes(out)


def test_rebuild_is_byte_identical_and_layout_independent(esconv_build, tmp_path):
    first = parquet_bytes(esconv_build)
    out = tmp_path / "b"
    # (prompt lengths are not measured here: --trim-tokenizer none; the parquet files are the same either way)
    build(BuildConfig(stage="sft", source_path=str(HUB_DIR), out=str(out), trim_tokenizer="none"))  # Hub files
    assert parquet_bytes(out) == first
    build(BuildConfig(stage="sft", source_path=str(ESCONV_JSON), out=str(out), trim_tokenizer="none"))  # in place
    assert parquet_bytes(out) == first


def check_card(build, rows: dict) -> None:
    meta = read_card_metadata((build / "README.md").read_text())
    assert meta["license"] == "cc-by-nc-4.0"
    assert [c["config_name"] for c in meta["configs"]] == list(SFT_CONFIGS)
    info = {i["config_name"]: i for i in meta["dataset_info"]}
    assert {s["name"]: s["num_examples"] for s in info["joint_sft"]["splits"]} == counts(build)["joint_sft"] == rows
    text = (build / "README.md").read_text()
    assert "CC BY-NC 4.0" in text and "| Question |" in text


def test_card_metadata_matches_files(esconv_build):
    check_card(esconv_build, FULL)


def test_card_metadata_matches_files_of_a_small_build(sft_build):
    check_card(sft_build, SMALL)


def check_default_config(build, rows: dict) -> None:
    from datasets import load_dataset

    meta = read_card_metadata((build / "README.md").read_text())
    assert [c["config_name"] for c in meta["configs"] if c.get("default")] == ["response_sft"]
    ds = load_dataset(str(build))
    assert {name: len(split) for name, split in ds.items()} == rows
    assert ds["test"][0]["prompt"][-1]["content"].endswith(
        "\n\n(Respond as the supporter using the strategy: " + ds["test"][0]["strategy"] + ")")


def test_an_sft_build_opens_response_sft_by_default(esconv_build):
    check_default_config(esconv_build, FULL)


def test_a_small_sft_build_opens_response_sft_by_default(sft_build):
    check_default_config(sft_build, SMALL)


def check_load_dataset_by_name(build, tmp_path, rows: dict) -> None:
    code = ("from datasets import load_dataset; d = load_dataset('ipm_prefdial', 'strategy_sft'); "
            "print({k: v.num_rows for k, v in d.items()}); print(d['test'][0]['completion'][0]['content'])")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=build.parent, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == str(rows)
    assert lines[1] in {"Question", "Others", "Providing Suggestions", "Affirmation and Reassurance",
                        "Self-disclosure", "Reflection of feelings", "Information", "Restatement or Paraphrasing"}


def test_load_dataset_opens_the_build(esconv_build, tmp_path):
    check_load_dataset_by_name(esconv_build, tmp_path, FULL)


def test_load_dataset_opens_a_small_build(sft_build, tmp_path):
    check_load_dataset_by_name(sft_build, tmp_path, SMALL)


def test_build_touches_nothing_else_and_drops_stale_files(tmp_path):
    out = tmp_path / "ds"  # a clone of the dataset's Hub repo holding an older build
    (out / "data" / "joint_sft").mkdir(parents=True)
    (out / ".gitattributes").write_text("*.parquet filter=lfs")
    (out / "data" / "joint_sft" / "old-00000-of-00001.parquet").write_bytes(b"stale")
    (out / "data" / "joint_sft" / ".train-00000-of-00001.parquet.4242.tmp").write_bytes(b"a killed build's")
    build(BuildConfig(stage="sft", source_path=str(ESCONV_JSON), out=str(out), limit=2))
    assert (out / ".gitattributes").read_text() == "*.parquet filter=lfs"
    assert sorted(p.name for p in out.iterdir()) == [".gitattributes", "README.md", "data", "manifest.json"]
    assert not (out / "data" / "joint_sft" / "old-00000-of-00001.parquet").exists()
    assert not list(out.rglob("*.tmp"))


def test_a_directory_of_other_things_is_not_a_build_directory(tmp_path):
    out = tmp_path / "ds"
    (out / "data" / "joint_sft").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "data" / "joint_sft" / "old-00000-of-00001.parquet").write_bytes(b"stale")
    with pytest.raises(ConfigError, match="ds: holds notes.txt, so it is not a build directory"):
        build(BuildConfig(stage="sft", source_path=str(ESCONV_JSON), out=str(out), limit=2))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "data", "data/joint_sft", "data/joint_sft/old-00000-of-00001.parquet", "notes.txt"]


def test_limit_takes_the_first_dialogues_of_each_split_in_list_order(tmp_path):
    out = tmp_path / "ds"
    build(BuildConfig(stage="sft", source_path=str(ESCONV_JSON), out=str(out), limit=3))
    lists = json.loads((ESCONV_DIR / "split_indices.json").read_text())
    test_ids = [r["dialog_id"] for r in pq.read_table(out / "data/joint_sft/test-00000-of-00001.parquet").to_pylist()]
    assert list(dict.fromkeys(test_ids)) == lists["decoupledesc_test"][:3]
    assert json.loads((out / "manifest.json").read_text())["split"]["dialogues"] == {
        "train": 3, "validation": 3, "test": 3}


def test_failed_esconv_builds_with_a_random_split(tmp_path):
    out = tmp_path / "failed"
    result = build(BuildConfig(source="failed-esconv", source_path=str(ESCONV_DIR / "FailedESConv.json"),
                               stage="sft", out=str(out), seed=3))
    m = result.manifest
    assert m["split"]["method"] == "random" and sum(m["split"]["dialogues"].values()) == 196
    assert sum(m["counts"]["joint_sft"].values()) == 2377  # every listener utterance is a sample


def test_yaml_config_and_cli_override(tmp_path):
    cfg_file = tmp_path / "build.yaml"
    cfg_file.write_text(f"source-path: {ESCONV_JSON}\nstage: sft\nlimit: 1\nout: {tmp_path / 'from_yaml'}\n")
    result = runner.invoke(app, ["build", "--config", str(cfg_file), "--limit", "2"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "from_yaml" / "manifest.json").read_text())["split"]["limit"] == 2
    cfg_file.write_text("sauce: esconv\n")
    with pytest.raises(ConfigError, match="unknown option 'sauce'"):
        BuildConfig.load(cfg_file)


def test_cli_errors_are_messages_not_tracebacks(tmp_path):
    result = runner.invoke(app, ["build", "--stage", "sft", "--source-path", str(tmp_path / "missing.json"),
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 1  # bad input: the source
    assert "missing.json: no such file" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["build", "--stage", "most", "--source-path", str(ESCONV_JSON), "--out",
                                 str(tmp_path / "o")])
    assert result.exit_code == 2 and "'most' is not one of 'sft', 'import', 'all'" in plain(result.output)
    assert not (tmp_path / "o").exists()

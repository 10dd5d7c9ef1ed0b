"""`ipm export`: each layout read back row by row against the build's parquet files (the synthetic build, no
ESConv text), its literal shape, and the options it refuses."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from helpers import plain
from helpers.synthetic import SCRIPT_REPLY
from ipm_prefdial.cli import app

SFT = ("strategy_sft", "response_sft", "joint_sft")
PAIRS = ("strategy_pairs", "response_pairs", "joint_pairs", "response_pairs_retained", "joint_pairs_retained")


def rows_of(build, config: str, split: str) -> list[dict]:
    return pq.read_table(build / "data" / config / f"{split}-00000-of-00001.parquet").to_pylist()


def export(build, tmp_path, fmt: str, *extra: str):
    out = tmp_path / fmt
    result = CliRunner().invoke(app, ["export", str(build), "--format", fmt, "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "export.json").read_text())


def test_llamafactory_sharegpt_reads_back_as_the_build(synthetic_build, tmp_path):
    build = synthetic_build["out"]
    out, record = export(build, tmp_path, "llamafactory")
    assert len(record["files"]) == 19  # 3 SFT configs x 3 splits, 5 pair configs x 2 splits
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["ipm_prefdial_joint_pairs_train"] == {
        "file_name": "joint_pairs/train.json", "formatting": "sharegpt", "ranking": True,
        "columns": {"messages": "conversations", "system": "system", "chosen": "chosen", "rejected": "rejected"}}
    assert info["ipm_prefdial_response_sft_test"] == {
        "file_name": "response_sft/test.json", "formatting": "sharegpt",
        "columns": {"messages": "conversations", "system": "system"}}
    back = {"human": "user", "gpt": "assistant"}
    for name, count in record["files"].items():
        config, split = name.removesuffix(".json").split("/")
        items = json.loads((out / name).read_text())
        rows = rows_of(build, config, split)
        assert len(items) == len(rows) == count > 0
        for item, row in zip(items, rows, strict=True):
            # LLaMA-Factory's rule: human in odd positions, gpt in even ones
            assert [m["from"] for m in item["conversations"]] == ["human", "gpt"] * (len(item["conversations"]) // 2) \
                + ["human"] * (len(item["conversations"]) % 2)
            messages = [{"role": "system", "content": item["system"]}] + [
                {"role": back[m["from"]], "content": m["value"]} for m in item["conversations"]]
            assert item["id"] == row["id"]
            if config in SFT:
                assert messages[:-1] == row["prompt"] and messages[-1] == row["completion"][0]
            else:
                assert messages == row["prompt"]
                assert item["chosen"] == {"from": "gpt", "value": row["chosen"][0]["content"]}
                assert item["rejected"] == {"from": "gpt", "value": row["rejected"][0]["content"]}


def test_cso_layout_reads_back_as_the_joint_pairs(synthetic_build, tmp_path):
    build = synthetic_build["out"]
    out, record = export(build, tmp_path, "cso")
    assert sorted(record["files"]) == ["joint_pairs/train.json", "joint_pairs/validation.json",
                                       "joint_pairs_retained/train.json", "joint_pairs_retained/validation.json"]

    def bracketed(text: str) -> str:  # CSO's "(S) reply" back to the build's "[S] reply"
        match = re.fullmatch(r"\(([^)]+)\) (.*)", text, re.S)
        return f"[{match.group(1)}] {match.group(2)}" if match else text

    for name in record["files"]:
        config, split = name.removesuffix(".json").split("/")
        items = json.loads((out / name).read_text())
        rows = rows_of(build, config, split)
        assert len(items) == len(rows)
        for item, row in zip(items, rows, strict=True):
            assert set(item) == {"scene", "description", "messages", "chosen", "reject"}
            assert item["scene"] == row["problem_type"] and item["description"] == row["emotion_type"]
            system, *turns = item["messages"]
            assert system["role"] == "system" and '"(Question) What has been on your mind lately?"' in system["content"]
            assert [{"role": m["role"], "content": bracketed(m["content"])} for m in turns] == row["prompt"][1:]
            assert item["chosen"]["role"] == item["reject"]["role"] == "assistant"
            assert bracketed(item["chosen"]["content"]) == row["chosen"][0]["content"]
            assert bracketed(item["reject"]["content"]) == row["rejected"][0]["content"]
    everything = "".join((out / "joint_pairs" / f"{split}.json").read_text() for split in ("train", "validation"))
    assert json.dumps(f"(Question) {SCRIPT_REPLY}") in everything


def test_openai_jsonl_reads_back_as_the_build(synthetic_build, tmp_path):
    build = synthetic_build["out"]
    out, record = export(build, tmp_path, "openai-jsonl", "--config", "joint_sft", "--config", "response_pairs")
    assert sorted(record["files"]) == ["joint_sft/test.jsonl", "joint_sft/train.jsonl", "joint_sft/validation.jsonl",
                                       "response_pairs/train.jsonl", "response_pairs/validation.jsonl"]
    for name in record["files"]:
        config, split = name.removesuffix(".jsonl").split("/")
        lines = [json.loads(x) for x in (out / name).read_text().splitlines()]
        rows = rows_of(build, config, split)
        assert len(lines) == len(rows)
        for line, row in zip(lines, rows, strict=True):
            if config == "joint_sft":
                assert line == {"messages": [*row["prompt"], row["completion"][0]]}
            else:
                assert line == {"input": {"messages": row["prompt"]}, "preferred_output": row["chosen"],
                                "non_preferred_output": row["rejected"]}


def test_the_same_build_exports_the_same_bytes_again(synthetic_build, tmp_path):
    out, _ = export(synthetic_build["out"], tmp_path, "cso")
    first = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = CliRunner().invoke(app, ["export", str(synthetic_build["out"]), "--format", "cso", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == first


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--format", "cso", "--config", "response_pairs", "-o", "{tmp}/x"], 2,
     "--config response_pairs: the cso layout writes supporter replies as '(strategy) reply'"),
    (["--format", "llamafactory", "--config", "pairs", "-o", "{tmp}/x"], 2, "--config pairs: not a config of a build"),
    (["--format", "llamafactory", "-o", "{build}/export"], 2, "inside the build directory"),
    (["--format", "llamafactory", "-o", "{tmp}/notes"], 2, "a directory with other files in it"),
    (["--format", "parquet", "-o", "{tmp}/x"], 2, "'parquet' is not one of"),
])
def test_bad_export_options_are_named(synthetic_build, tmp_path, args, code, words):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    args = [a.format(build=synthetic_build["out"], tmp=tmp_path) for a in args]
    result = CliRunner().invoke(app, ["export", str(synthetic_build["out"]), *args])
    assert result.exit_code == code and words in plain(result.output), result.output
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me" and not (tmp_path / "x").exists()

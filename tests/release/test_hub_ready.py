"""A build is Hub-ready: no absolute path of the building machine in any of its files (parquet included), tags
and source_datasets on the card, and `ipm publish` uploads a card whose examples name the repo."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
from typer.testing import CliRunner

from helpers import ESCONV_JSON, ROOT, fake_build_args
from ipm_prefdial.build import build
from ipm_prefdial.cli import app
from ipm_prefdial.config import BuildConfig
from ipm_prefdial.prompts import default_prompts_dir
from ipm_prefdial.release.card import read_card_metadata


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from strings(v)


def texts_of_build(out: Path):
    """Every string a user of the build can read: the card, the manifest, every parquet value and schema."""
    for path in sorted(out.rglob("*")):
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            for key, value in (table.schema.metadata or {}).items():
                yield f"{path.name} metadata", key.decode() + value.decode()
            for row in table.to_pylist():
                for text in strings(row):
                    yield f"{path.name} id {row['id']}", text
        elif path.is_file():
            yield path.name, path.read_text(encoding="utf-8")


def machine_paths(*extra: Path) -> set[str]:
    return {str(Path.home()), os.getcwd(), tempfile.gettempdir(), str(ROOT), *(str(p) for p in extra)}


def assert_no_machine_path(out: Path, *extra: Path) -> None:
    forbidden = machine_paths(*extra)
    for where, text in texts_of_build(out):
        for path in forbidden:
            assert path not in text, f"{where} contains {path!r}: ...{text[max(0, text.find(path) - 80):][:200]}"


def test_no_machine_path_in_any_file_of_a_build(fake_llm, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    source = tmp_path / "corpus" / "ESConv.json"
    source.parent.mkdir()
    shutil.copy(ESCONV_JSON, source)
    prompts = tmp_path / "my-prompts"
    shutil.copytree(default_prompts_dir(), prompts)
    cache, out = tmp_path / "cache", work / "ipm_prefdial"
    args = [*fake_build_args(fake_llm["url"]), "--source-path", str(source), "--prompts-dir", str(prompts),
            "--cache-dir", str(cache), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert_no_machine_path(out, source.parent, prompts, cache, work)
    m = json.loads((out / "manifest.json").read_text())
    assert m["source"]["file"] == "ESConv.json" and len(m["source"]["sha256"]) == 64
    assert m["build_config"]["source_path"] == "ESConv.json" and m["build_config"]["prompts_dir"] == "my-prompts"
    from ipm_prefdial.validate import validate

    assert validate(out).ok, validate(out).lines()  # the custom prompts are checked from the manifest alone


def test_skipped_dialogues_are_named_by_file_not_path(tmp_path):
    bad = tmp_path / "src" / "corpus.json"
    bad.parent.mkdir()
    dialogs = json.loads(ESCONV_JSON.read_text())[:30]
    dialogs[3]["dialog"][0]["content"] = "   "
    bad.write_text(json.dumps(dialogs))
    out = tmp_path / "o"
    build(BuildConfig(source="json", source_path=str(bad), stage="sft", on_invalid="skip", out=str(out)))
    m = json.loads((out / "manifest.json").read_text())
    assert m["split"]["skipped_invalid"][0]["problems"][0].startswith("corpus.json: dialogue 3")
    assert_no_machine_path(out, bad.parent)


def test_tags_and_source_datasets_follow_the_stage(sft_build, fake_pairs_build):
    sft = read_card_metadata((sft_build / "README.md").read_text())
    pairs = read_card_metadata((fake_pairs_build["out"] / "README.md").read_text())
    assert sft["source_datasets"] == pairs["source_datasets"] == ["thu-coai/esconv"]
    assert "synthetic" not in sft["tags"] and "sft" in sft["tags"] and "dpo" not in sft["tags"]
    assert {"synthetic", "dpo", "preference", "sft"} <= set(pairs["tags"])


def test_sample_builds_on_the_real_engine_name_no_path(pairs_build):
    assert_no_machine_path(pairs_build["out"], pairs_build["cache"])

"""A build's memory does not grow with its size: rows go to their parquet files a row group at a time (the same bytes
as one write of all of them), the files are put in place together at the end (a build that stops leaves the
directory as it was), and the judge runs in parts whose requests and answers are let go (the same rows and
accounting as one batch)."""

from __future__ import annotations

import asyncio
import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.progress import Progress
from typer.testing import CliRunner

from helpers import ESCONV_JSON, fake_build_args
from ipm_prefdial.build import build
from ipm_prefdial.cli import app
from ipm_prefdial.config import BuildConfig
from ipm_prefdial.engines.base import Engine
from ipm_prefdial.engines.requests import ChatRequest, ChatResult
from ipm_prefdial.engines.runner import run_requests
from ipm_prefdial.engines.streaming import stream_grouped
from ipm_prefdial.mining import run as pipeline
from ipm_prefdial.release.features import SFT_FEATURES
from ipm_prefdial.release.files import DataFiles, ParquetSink


def sft_row(i: int) -> dict:
    return {"id": f"{i // 7}-{i % 7}", "dialog_id": i // 7, "turn_index": i % 7, "strategy": "Question",
            "emotion_type": None if i % 11 == 0 else "anxiety", "problem_type": "job crisis",
            "prompt": [{"role": "system", "content": "sys"}, {"role": "user", "content": f"seeker line {i % 97}"}],
            "completion": [{"role": "assistant", "content": "Question"}]}


def test_a_sink_writes_row_groups_with_the_bytes_of_one_write(tmp_path):
    rows = [sft_row(i) for i in range(12_001)]
    sink = ParquetSink(tmp_path / "data" / "strategy_sft" / "train-00000-of-00001.parquet", SFT_FEATURES)
    for row in rows:
        sink.add(row)
    assert len(sink.pending) == 2001  # two row groups written, the rest waiting
    info = sink.commit()

    whole = pa.Table.from_pylist(rows, schema=SFT_FEATURES.arrow_schema)
    pq.write_table(whole, tmp_path / "one.parquet", compression="zstd", row_group_size=5000, write_statistics=True)
    written = tmp_path / "data" / "strategy_sft" / "train-00000-of-00001.parquet"
    assert written.read_bytes() == (tmp_path / "one.parquet").read_bytes()
    meta = pq.ParquetFile(written).metadata
    assert [meta.row_group(k).num_rows for k in range(meta.num_row_groups)] == [5000, 5000, 2001]
    assert info["rows"] == 12_001 and info["bytes"] == written.stat().st_size
    assert info["sha256"] == hashlib.sha256(written.read_bytes()).hexdigest()
    assert info["arrow_bytes"] == whole.nbytes
    assert pq.read_table(written).slice(12_000).to_pylist()[0]["id"] == "1714-2"
    assert sorted(p.name for p in written.parent.iterdir()) == ["train-00000-of-00001.parquet"]  # no temp file


def test_data_files_put_nothing_in_place_until_commit_and_drop_what_is_discarded(tmp_path):
    from ipm_prefdial.release.features import FEATURES

    with DataFiles(tmp_path, FEATURES) as data:
        for i in range(5003):  # a row group is written to the temp file
            data.sink("joint_sft", "test").add(sft_row(i))
        data.sink("joint_sft", "validation")  # opened, never given a row: no file
        data.sink("strategy_sft", "train").add(sft_row(0))
        temp = [p.name for p in tmp_path.rglob("*") if p.is_file()]
        assert len(temp) == 1 and temp[0].startswith(".test-00000-of-00001.parquet.") and temp[0].endswith(".tmp")
        files = data.commit()
    assert list(files) == ["data/strategy_sft/train-00000-of-00001.parquet",
                           "data/joint_sft/test-00000-of-00001.parquet"]  # configs in card order
    assert [files[f]["rows"] for f in files] == [1, 5003]

    with DataFiles(tmp_path / "b", FEATURES) as data:
        for i in range(5001):
            data.sink("joint_sft", "train").add(sft_row(i))
    assert not [p for p in (tmp_path / "b").rglob("*") if p.is_file()]  # left without commit: nothing stays


def test_a_build_that_stops_leaves_the_earlier_build_as_it_was(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    build(BuildConfig(stage="sft", source_path=str(ESCONV_JSON), out=str(out), limit=2, trim_tokenizer="none"))
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    def stop(*args, **kwargs):
        raise KeyboardInterrupt  # the user's Ctrl-C while the policy runs (the SFT rows are being written by now)

    monkeypatch.setattr(pipeline, "mine", stop)
    with pytest.raises(KeyboardInterrupt):
        build(BuildConfig(stage="all", engine="local", source_path=str(ESCONV_JSON), out=str(out), limit=3,
                          trim_tokenizer="none"))
    after = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before  # same files, same bytes, no temp file left


class Echo(Engine):
    name, model, concurrency = "echo", "echo", 4

    async def complete(self, request: ChatRequest) -> ChatResult:
        await asyncio.sleep(0)
        return ChatResult(text=request.messages[-1][1], parsed=None, finish_reason="stop")

    def stream(self, requests):
        return stream_grouped(requests, self.complete, self.concurrency)


def test_a_batch_run_in_parts_fills_one_progress_bar_once():
    requests = [ChatRequest.chat([{"role": "user", "content": f"q{i % 5}"}]) for i in range(8)]  # 3 repeats
    progress = Progress(disable=True)
    bar = progress.add_task("judging", total=12)
    engine = Echo()

    async def go():
        first = await run_requests(engine, requests, progress=progress, progress_task=bar)
        second = await run_requests(engine, requests[:4], progress=progress, progress_task=bar)
        return first, second

    first, second = asyncio.run(go())
    assert [r.text for r in first] == ["q0", "q1", "q2", "q3", "q4", "q0", "q1", "q2"]
    assert [r.text for r in second] == ["q0", "q1", "q2", "q3"]
    assert len(progress.tasks) == 1
    assert progress.tasks[0].completed == 12  # a repeat is counted once, when its answer is given to it


def test_the_judge_in_parts_gives_the_rows_and_accounting_of_one_batch(fake_pairs_build, fake_llm, tmp_path,
                                                                       monkeypatch):
    monkeypatch.setattr(pipeline, "JUDGE_PART", 3)
    out = tmp_path / "ipm_prefdial"
    result = CliRunner().invoke(app, [*fake_build_args(fake_llm["url"]), "--out", str(out), "--cache-dir",
                                      str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    one = fake_pairs_build["out"]
    for path in sorted((one / "data").rglob("*.parquet")):
        assert (out / path.relative_to(one)).read_bytes() == path.read_bytes(), path.relative_to(one)

    def judge(root):
        section = json.loads((root / "manifest.json").read_text())["judge"]
        for config in section.values():
            config["accounting"].pop("wall_s")
        return section

    parts, whole = judge(out), judge(one)
    # one joint pair's verdict request repeats another's (the same reply twice): one batch sends it once and
    # gives the answer to both (merged); in parts, the repeat falls in a later part and the cache answers it
    assert whole["joint_pairs"]["accounting"] | {"merged": 0, "cache_hits": 1} == parts["joint_pairs"]["accounting"]
    assert (whole["joint_pairs"]["accounting"]["merged"], parts["joint_pairs"]["accounting"]["sent"]) == (1, 85)
    whole["joint_pairs"]["accounting"] = parts["joint_pairs"]["accounting"]
    assert parts == whole
    assert [(parts[c]["pairs"], parts[c]["accounting"]["requests"], parts[c]["retained"])
            for c in ("response_pairs", "joint_pairs")] == [(86, 86, 27), (86, 86, 19)]

"""`ipm reproduce` end to end with the real small model on six short dialogues: every stage runs, a rerun skips them
all, a changed setting reruns its stage and those after it only, and a run killed while it mines finishes, when run
again, with the results it had, redoing only the stage it was in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from typer.testing import CliRunner

from ipm_prefdial.cli import app

STAGES = ["data", "sft-sp", "sft-rg", "sft-vm", "mine", "judge", "dpo-sp", "dpo-rg", "dpo-vm",
          "infer-decoupled-sft", "infer-joint-sft", "infer-decoupled-dpo", "infer-joint-dpo", "eval"]


def tiny_config(path, corpus, **changes) -> str:
    # six dialogues cut after their second supporter turn, split 4 / 1 / 1: a dozen requests a task; one SFT
    # example and one DPO pair a model, one step each (a DPO step of one pair is ~9 s here)
    config = {"source": "json", "source_path": str(corpus), "split": "random", "quick": True, "bootstrap": 200,
              "build": {"engine": "transformers", "judge_engine": "local", "concurrency": 8, "rg_max_tokens": 16,
                        "vm_max_tokens": 16, "judge_max_tokens": 200, "trim_tokenizer": "none"},
              "train": {"sft": {"max_examples": 1, "batch_size": 1}, "dpo": {"max_examples": 1, "batch_size": 1},
                        "heldout_pairs": 1, "test_turns": None, "eval_max_tokens": 8, "min_retained": 2}}
    for key, value in changes.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(config))
    return str(path)


def reproduce(config: str, out, cache) -> str:
    result = CliRunner().invoke(app, ["reproduce", "--config", config, "--out", str(out), "--cache-dir", str(cache)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def reproduced(short_corpus, base_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    config = tiny_config(root / "tiny.yaml", short_corpus)
    output = reproduce(config, root / "run", base_cache)
    return {"root": root, "out": root / "run", "config": config, "output": output, "corpus": short_corpus,
            "results": (root / "run" / "results.json").read_bytes(), "base": base_cache}


def test_every_stage_runs_and_records_what_it_read_and_wrote(reproduced):
    out = reproduced["out"]
    book = json.loads((out / "stages.json").read_text())["stages"]
    assert list(book) == STAGES
    assert all(r["status"] == "done" and r["seconds"] >= 0 for r in book.values())
    assert set(book["dpo-rg"]["read"]) == {"pairs", "sft"} and set(book["dpo-rg"]["wrote"]) == {"model"}
    assert all(len(h) == 64 for r in book.values() for h in r["wrote"].values())
    assert book["judge"]["summary"]["judge_status"]  # the pairs were judged
    results = json.loads(reproduced["results"])
    assert list(results["systems"]) == ["decoupled SFT", "joint SFT", "decoupled DPO", "joint DPO"]
    for system in results["systems"].values():
        assert system["turns"] == 2 and system["bootstrap"] == {"resamples": 200, "unit": "dialogue", "seed": 0,
                                                                "dialogues": 1}
        assert len(system["strategy"]["lenient"]["ci95"]["Q"]) == 2
    assert list(results["comparisons"]) == ["decoupled DPO - joint DPO", "decoupled SFT - joint SFT",
                                            "decoupled DPO - decoupled SFT", "joint DPO - joint SFT"]
    entry = results["comparisons"]["decoupled DPO - joint DPO"]
    assert entry["matched"] == 2 and set(entry["strategy"]["lenient"]["B"]) == {"diff", "ci95", "p"}
    report = (out / "report.md").read_text()
    assert "## Paired differences" in report and "| decoupled DPO - joint DPO |" in report
    for name in ("decoupled-sft", "joint-dpo"):
        assert len((out / "predictions" / f"{name}.jsonl").read_text().splitlines()) == 2


def test_a_rerun_skips_every_stage_and_a_changed_setting_reruns_only_what_follows_it(reproduced, tmp_path):
    out = reproduced["out"]
    again = reproduce(reproduced["config"], out, reproduced["base"])
    assert again.count("up to date, skipped") == len(STAGES) and "ran 0 of 14 stages" in again
    assert (out / "results.json").read_bytes() == reproduced["results"]
    # a new seed of the resampling: only the evaluation runs again
    changed = reproduce(tiny_config(tmp_path / "seed.yaml", reproduced["corpus"], seed=1), out, reproduced["base"])
    assert changed.count("up to date, skipped") == len(STAGES) - 1 and "eval: running" in changed
    assert json.loads((out / "results.json").read_text())["bootstrap"]["seed"] == 1
    back = reproduce(reproduced["config"], out, reproduced["base"])  # and back: the first bytes again
    assert back.count("up to date, skipped") == len(STAGES) - 1
    assert (out / "results.json").read_bytes() == reproduced["results"]


def test_a_run_killed_while_it_mines_redoes_that_stage_only_and_ends_with_the_same_results(reproduced, tmp_path):
    """Another sampling temperature makes the mining run again; SIGKILL while it mines. The rerun with the first
    settings redoes the mining (from the request cache), writes the same pairs, and skips every stage after it."""
    out = reproduced["out"]
    hotter = tiny_config(tmp_path / "hot.yaml", reproduced["corpus"], build={"temperature": 0.9})
    proc = subprocess.Popen([sys.executable, "-m", "ipm_prefdial.cli", "reproduce", "--config", hotter, "--out",
                             str(out), "--cache-dir", str(reproduced["base"])], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=os.environ.copy(), start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if json.loads((out / "stages.json").read_text())["stages"]["mine"]["status"] == "running":
            time.sleep(2)  # into the mining
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it mined"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert json.loads((out / "stages.json").read_text())["stages"]["mine"]["status"] == "running"
    output = reproduce(reproduced["config"], out, reproduced["base"])
    assert "mine: running" in output and "mine: done" in output
    for stage in STAGES[STAGES.index("judge"):]:
        assert f"{stage}: up to date, skipped" in output, stage
    assert (out / "results.json").read_bytes() == reproduced["results"]


def test_the_book_hashes_content_and_reads_a_file_again_only_when_its_stat_changed(tmp_path):
    from ipm_prefdial.reproduce.book import Book, content_digest

    model = tmp_path / "out" / "models"
    model.mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"one")
    book = Book(tmp_path / "out")
    first = book.digest(model)
    assert first == content_digest(model) and len(first) == 64
    book.hashes["models"]["sha256"] = "remembered"  # unchanged stat: the remembered hash, the files are not read
    assert book.digest(model) == "remembered"
    os.utime(model / "weights.bin", ns=(1, 1))  # touched, same bytes: read again, same content hash
    assert book.digest(model) == first
    (model / "weights.bin").write_bytes(b"two")
    assert book.digest(model) not in (first, None)
    assert book.digest(tmp_path / "out" / "missing") is None
    book.start("sft-sp", "f" * 64, {}, {})
    book.finish("sft-sp", {"model": model}, 1.25)
    again = Book(tmp_path / "out")  # read back from stages.json
    assert again.fresh("sft-sp", "f" * 64, {"model": model})
    assert not again.fresh("sft-sp", "e" * 64, {"model": model})  # other settings or inputs
    (model / "more.bin").write_bytes(b"x")
    assert not again.fresh("sft-sp", "f" * 64, {"model": model})  # its output changed


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("build: {engine: local}", "build.engine 'local': mining with the trained models needs transformers or vllm"),
    ("build: {out: x}", "build.out is set by ipm reproduce itself"),
    ("build: {sampels: 2}", "build.sampels: not an option of ipm build"),
    ("train: {sft: {epoch: 2}}", "train: sft: unknown option(s) epoch"),
    ("bootstrap: 0", "bootstrap 0: the comparisons need at least 1 resample"),
    ("resamples: 5", "unknown option 'resamples'"),
])
def test_reproduce_config_errors_are_one_line(tmp_path, yaml_text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    result = CliRunner().invoke(app, ["reproduce", "--config", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_dead_judge_endpoint_stops_the_loop_before_any_stage(tmp_path):
    config = tmp_path / "dead.yaml"
    config.write_text("build: {engine: transformers, judge_engine: openai, judge_base_url: 'http://127.0.0.1:9/v1'}\n")
    started = time.monotonic()
    result = CliRunner().invoke(app, ["reproduce", "--config", str(config), "--out", str(tmp_path / "out")])
    assert result.exit_code == 75, result.output
    assert "127.0.0.1:9" in result.output and len(result.output.strip().splitlines()) <= 2
    assert time.monotonic() - started < 30 and not (tmp_path / "out").exists()  # no stage ran, nothing written

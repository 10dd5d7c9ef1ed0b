"""Batch mode against the package's scripted batch API (``testing.fake_batches``, written from OpenAI's and Azure's
documentation): a ``--batch --judge-batch`` build equals the online build byte for byte, a build killed while it
waits re-attaches to its batches, expired lines (and only they) are sent again, files are split under a limit,
``--batch-wait 0`` submits and stops, ``ipm batches`` lists and cancels, and ``--batch-export`` / ``ipm batches
import`` round-trip through files. The online reference is the session's ``fake_pairs_build`` (``--limit 2``:
249 policy requests and 171 judge requests are sent, 420 in all)."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import IPM, fake_build_args, parquet, plain
from ipm_prefdial.cli import app
from ipm_prefdial.testing.fake_llm import FakeLLM

runner = CliRunner()
POLL = ("--batch-poll", "0.01")


def build(url: str, root: Path, *extra: str, cache: str = "cache"):
    return runner.invoke(app, [*fake_build_args(url, *extra), "--out", str(root / "out"),
                               "--cache-dir", str(root / cache)])


@pytest.fixture
def server():
    fake = FakeLLM().start()
    yield fake
    fake.stop()


def test_a_batch_build_is_the_online_build_byte_for_byte(server, fake_pairs_build, tmp_path):
    result = build(server.url, tmp_path, "--batch", "--judge-batch", *POLL)
    assert result.exit_code == 0, result.output
    assert parquet(tmp_path / "out") == parquet(fake_pairs_build["out"])
    batches = server.batches
    assert len(batches.batches) == 2  # the policy's 249 lines, then the judge's 171
    assert [b["request_counts"]["total"] for b in batches.batches.values()] == [249, 171]
    assert sum(batches.submitted.values()) == 420 and max(batches.submitted.values()) == 1
    assert server.answered == 420
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["models"]["judge"]["mode"] == "batch"
    assert manifest["spend"]["by_role"]["policy"]["batch"]["requests"] == 249


def test_expired_lines_and_only_they_are_sent_again_and_small_files_split(server, fake_pairs_build, tmp_path):
    server.batches.expire_percent = 20
    server.batches.max_lines = 100  # a file of more lines fails validation (too_many_tasks)
    server.batches.fail_codes = ["token_limit_exceeded"]  # the first batch hits the enqueued-token quota
    result = build(server.url, tmp_path, "--batch", "--judge-batch", "--batch-max-lines", "100", *POLL)
    assert result.exit_code == 0, result.output
    assert parquet(tmp_path / "out") == parquet(fake_pairs_build["out"])
    batches = server.batches
    twice = {key for key, n in batches.submitted.items() if n == 2}
    assert twice == batches.expired_once and len(twice) == 91  # about 20% of 420 lines, chosen by custom_id
    assert max(batches.submitted.values()) == 2
    statuses = [b["status"] for b in batches.batches.values()]
    assert statuses.count("failed") == 1 and statuses.count("expired") == 5
    totals = [b["request_counts"]["total"] for b in batches.batches.values() if b["status"] != "failed"]
    assert max(totals) == 100 and sum(totals) == 420 + 91
    assert server.answered == 420


def test_batch_wait_0_submits_and_stops_then_a_rerun_collects_and_cancelled_lines_go_again(
        server, fake_pairs_build, tmp_path):
    first = build(server.url, tmp_path, "--batch", "--judge-batch", "--batch-wait", "0", *POLL)
    assert first.exit_code == 3, first.output
    assert "258 requests are in batches still running at the provider" in plain(first.output)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] is False
    assert manifest["incomplete"]["transient_failures"] == {"batch_pending": 258}  # 249 sent, 9 repeats
    listed = runner.invoke(app, ["batches", "list", "--cache-dir", str(tmp_path / "cache")])
    assert listed.exit_code == 0 and "part 1 policy batch_000001 in_progress: 249 lines" in listed.output
    for _ in range(2):  # meanwhile, at the provider, the batch runs and ends
        server.batches.retrieve("batch_000001")
    second = build(server.url, tmp_path, "--batch", "--judge-batch", "--batch-wait", "0", *POLL)
    assert second.exit_code == 3  # the policy's batch collected, the judge's submitted
    assert "172 requests are in batches" in plain(second.output)
    cancelled = runner.invoke(app, ["batches", "cancel", "--cache-dir", str(tmp_path / "cache")])
    assert cancelled.exit_code == 0 and "batch_000002 (judge, 171 lines): cancelling" in cancelled.output
    third = build(server.url, tmp_path, "--batch", "--judge-batch", *POLL)
    assert third.exit_code == 0, third.output
    assert parquet(tmp_path / "out") == parquet(fake_pairs_build["out"])
    assert [b["status"] for b in server.batches.batches.values()] == ["completed", "cancelled", "completed"]
    assert server.answered == 420  # the cancelled batch answered nothing: its lines went out once more


def test_azure_global_batch_form_with_the_policy_online_and_the_judge_in_a_batch(server, fake_pairs_build, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "azure-test-key")
    root = server.url.removesuffix("/v1")
    url = f"{root}/openai/deployments/fake-llm?api-version=2024-10-21"
    result = build(url, tmp_path, "--judge-batch", *POLL)
    assert result.exit_code == 0, result.output
    assert parquet(tmp_path / "out") == parquet(fake_pairs_build["out"])  # the deployment is the model
    [batch] = server.batches.batches.values()  # the judge's 171 requests; the policy's 249 went online
    assert batch["request_counts"]["total"] == 171 and server.answered == 420
    assert batch["endpoint"] == "/chat/completions" and batch["error_file_id"]  # Azure's (empty) error file


def test_a_build_killed_while_waiting_reattaches_and_pays_for_nothing_twice(fake_pairs_build, tmp_path):
    server = FakeLLM().start()
    try:
        # (no tokenizer counts prompt lengths for the card: the parquet files do not hold them, and a new process
        # would spend seconds loading it)
        args = [*fake_build_args(server.url, "--batch", "--judge-batch", "--trim-tokenizer", "none",
                                 "--batch-poll", "0.3"),
                "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
        child = subprocess.Popen([*IPM, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cache = tmp_path / "cache" / "requests.sqlite"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:  # kill it once its batch is recorded
            if cache.is_file():
                with sqlite3.connect(cache) as db:
                    try:
                        if db.execute("SELECT COUNT(*) FROM batch_parts WHERE batch_id IS NOT NULL").fetchone()[0]:
                            break
                    except sqlite3.OperationalError:
                        pass
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
        assert len(server.batches.batches) == 1 and server.answered == 0  # killed while the policy's batch ran
        rerun = runner.invoke(app, args[:-4] + ["--batch-poll", "0.01", *args[-4:]])
        assert rerun.exit_code == 0, rerun.output
    finally:
        server.stop()
    assert parquet(tmp_path / "out") == parquet(fake_pairs_build["out"])
    assert len(server.batches.batches) == 2 and max(server.batches.submitted.values()) == 1
    assert server.answered == 420


def test_a_batch_the_provider_refuses_stops_the_build_with_its_words(server, tmp_path):
    server.batches.fail_codes = ["model_not_found"]
    result = build(server.url, tmp_path, "--batch", "--no-judge", *POLL)
    assert result.exit_code == 1
    assert "batch failed: batch_000001: model_not_found" in plain(result.output)


def test_an_upload_the_provider_refuses_stops_the_build_with_its_words(server, tmp_path):
    server.batches.refuse_uploads = "File is too large."
    result = build(server.url, tmp_path, "--batch", "--no-judge", *POLL)
    assert result.exit_code == 1
    assert "HTTP 400: POST /files:" in plain(result.output) and "File is too large." in plain(result.output)


def test_a_build_stopped_before_its_upload_and_a_lost_answer_to_a_new_batch_pay_for_nothing_twice(
        server, fake_pairs_build, tmp_path):
    """The part is recorded before its upload: a build stopped there (here by a refused upload) leaves a part with
    no file, whose lines the rerun sends in a new one. A batch made whose answer is lost (a gateway's 502) is found
    in the provider's list by its file before a second try could make it twice."""
    server.batches.refuse_uploads = "Service busy."
    first = build(server.url, tmp_path, "--batch", "--judge-batch", *POLL)
    assert first.exit_code == 1 and "Service busy." in plain(first.output)
    server.batches.refuse_uploads, server.batches.lose_creates = None, 1
    second = build(server.url, tmp_path, "--batch", "--judge-batch", *POLL)
    assert second.exit_code == 0, second.output
    assert parquet(tmp_path / "out") == parquet(fake_pairs_build["out"])
    assert len(server.batches.batches) == 2 and max(server.batches.submitted.values()) == 1
    assert server.answered == 420


def test_export_then_import_round_trip(server, fake_pairs_build, tmp_path):
    """--batch-export writes the pending requests and stops; the output files, answered elsewhere (here by the test
    server's batch answers, in shuffled order), go in with ipm batches import; the same command then goes on."""
    files = tmp_path / "files"
    args = ("--model", "fake-llm", "--batch-export", str(files))
    for wave, (lines, pending) in enumerate(((249, "258 requests written"), (171, "172 requests written"))):
        result = build("http://127.0.0.1:9/v1", tmp_path, *args)  # nothing is sent: no server there
        assert result.exit_code == 3, result.output
        assert pending in plain(result.output)
        # one file of this wave's role and model; the policy's of the first wave is gone once answered
        [source] = sorted(files.glob("*.jsonl"))
        assert re.fullmatch(("policy" if wave == 0 else "judge") + r"-[0-9a-f]{8}-001\.jsonl", source.name)
        items = [json.loads(line) for line in source.read_text().splitlines()]
        assert len(items) == lines
        output = tmp_path / f"output-{wave}.jsonl"
        answered = [{"id": f"vllm-{n}", "custom_id": item["custom_id"], "response": {
            "status_code": 200, "request_id": f"vllm-batch-{n}", "body": server.answer_line(item["body"])[1]},
            "error": None} for n, item in enumerate(items)]
        output.write_text("".join(json.dumps(a) + "\n" for a in reversed(answered)))
        imported = runner.invoke(app, ["batches", "import", str(output), "--cache-dir", str(tmp_path / "cache")])
        assert imported.exit_code == 0, imported.output
        assert f"imported {lines} answers and 0 failures" in plain(imported.output)
    final = build("http://127.0.0.1:9/v1", tmp_path, *args)
    assert final.exit_code == 0, final.output
    assert parquet(tmp_path / "out") == parquet(fake_pairs_build["out"])


def test_batch_options_are_checked_before_anything_runs(tmp_path):
    result = runner.invoke(app, [*fake_build_args("http://127.0.0.1:9/v1", "--batch", "--no-cache"),
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "--batch records its batches in the request cache: drop --no-cache" in plain(result.output)
    result = runner.invoke(app, ["build", "--stage", "all", "--batch", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "--batch: the policy engine is local; batches need --engine openai" in plain(result.output)

"""`--executor ray`: engines in Ray actors on a local Ray (this machine's 2 CPUs), the driver keeping the cache.
The same build with Ray and without gives the same bytes; a killed worker costs only its requests in flight."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from helpers import ESCONV_JSON, IPM
from helpers.executors import build
from ipm_prefdial.testing.fake_llm import FakeLLM, read_log
from ipm_prefdial.validate import validate

pytestmark = pytest.mark.ray


def parquet(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "data").rglob("*.parquet"))}


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def sent(m: dict) -> int:
    return sum(s["accounting"]["sent"] for s in [*m["mining"].values(), *(m["judge"] or {}).values()])


def test_ray_and_local_give_the_same_bytes_and_a_rerun_sends_nothing(local_build, tmp_path):
    with FakeLLM(tmp_path / "answered.jsonl") as url:
        first = build(url, tmp_path / "ds", tmp_path / "cache", "--executor", "ray", "--workers", "2")
        answered = len(read_log(tmp_path / "answered.jsonl"))
        build(url, tmp_path / "again", tmp_path / "cache", "--executor", "ray", "--workers", "2")
    assert parquet(tmp_path / "ds") == parquet(local_build)
    m = manifest(tmp_path / "ds")
    assert m["executor"] == {"kind": "ray", "workers": 2}
    pool = m["models"]["rg"]
    assert pool["executor"] == "ray" and len(pool["per_worker"]) == 2
    assert all(w["answered"] > 0 for w in pool["per_worker"])  # both workers answered
    assert sum(w["answered"] for w in pool["per_worker"]) == sent(m) == answered
    assert "ray SP+RG+VM+JUDGE (2 workers): worker 0:" in " ".join(first.stdout.split())
    assert sent(manifest(tmp_path / "again")) == 0 and len(read_log(tmp_path / "answered.jsonl")) == answered
    assert parquet(tmp_path / "again") == parquet(local_build)


def committed(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_a_killed_worker_is_restarted_and_costs_only_its_requests_in_flight(local_build, tmp_path):
    import psutil

    log, cache, out = tmp_path / "answered.jsonl", tmp_path / "cache", tmp_path / "ds"
    server = FakeLLM(log, latency=0.05).start()
    args = [*IPM, "build", "--source-path", str(ESCONV_JSON), "--stage", "all", "--limit", "3", "--engine",
            "openai", "--base-url", server.url, "--concurrency", "4", "--trim-tokenizer", "none", "--out", str(out),
            "--cache-dir", str(cache), "--executor", "ray", "--workers", "2"]
    child = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while committed(cache / "requests.sqlite") < 150:
            assert child.poll() is None, child.communicate()[1][-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        workers = [p for p in psutil.process_iter(["cmdline"]) if "EngineWorker" in " ".join(p.info["cmdline"] or [])]
        assert len(workers) == 2, [p.info["cmdline"] for p in workers]
        killed_at = time.time()
        os.kill(workers[0].pid, signal.SIGKILL)
        stdout, stderr = child.communicate(timeout=240)
    finally:
        if child.poll() is None:
            child.kill()
        server.stop()
    assert child.returncode == 0, stderr[-3000:]
    assert parquet(out) == parquet(local_build)  # the build completed, the same bytes
    m = manifest(out)
    assert sum(w["deaths"] for w in m["models"]["rg"]["per_worker"]) >= 1
    assert "restarts" in " ".join(stdout.split())
    # the server's own log: nothing answered well before the kill was asked again (only requests in flight may be)
    lines = read_log(log)
    before = {line["sha256"] for line in lines if line["t"] < killed_at - 1.0}
    after = [line["sha256"] for line in lines if line["t"] >= killed_at]
    assert before and not before & set(after)
    assert len(lines) - len({line["sha256"] for line in lines}) <= 8  # at most the 2 x 4 slots in flight, twice


def test_ray_workers_on_the_real_embedded_engine(short_corpus, smollm2, tmp_path):
    """Two workers, each with its own llama.cpp on one thread (this machine has two cores), on 5 short dialogues."""
    out, cache = tmp_path / "ds", tmp_path / "cache"
    common = ["--source", "json", "--source-path", str(short_corpus), "--split", "random", "--stage", "all",
              "--no-judge", "--sp-max-tokens", "4", "--rg-max-tokens", "8", "--vm-max-tokens", "8", "--cache-dir",
              str(cache)]
    result = subprocess.run([*IPM, "build", *common, "--out", str(out), "--executor", "ray", "--workers", "2"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = validate(out)
    assert report.ok, report.lines()
    pool = manifest(out)["models"]["sp"]
    assert pool["engine"] == "local" and pool["threads"] == 1  # the worker's CPU share, not every core
    assert [w["answered"] > 0 for w in pool["per_worker"]] == [True, True]
    again = subprocess.run([*IPM, "build", *common, "--out", str(tmp_path / "again")], capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert sent(manifest(tmp_path / "again")) == 0  # the local executor replays what the Ray workers answered
    assert parquet(tmp_path / "again") == parquet(out)


def test_ipm_infer_on_ray_workers_writes_what_the_local_executor_writes(local_build, tmp_path):
    def infer(url: str, out: Path, cache: Path, *extra: str) -> str:
        args = [*IPM, "infer", "--data", str(local_build), "--system", "decoupled", "--engine", "openai",
                "--base-url", url, "--concurrency", "4", "--out", str(out), "--cache-dir", str(cache), *extra]
        result = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return " ".join(result.stdout.split())

    with FakeLLM(tmp_path / "answered.jsonl") as url:
        on_ray = infer(url, tmp_path / "ray.jsonl", tmp_path / "cache", "--executor", "ray", "--workers", "2")
        answered = len(read_log(tmp_path / "answered.jsonl"))
        infer(url, tmp_path / "local.jsonl", tmp_path / "other-cache")
        again = infer(url, tmp_path / "again.jsonl", tmp_path / "cache")
    rows = (tmp_path / "ray.jsonl").read_text().splitlines()
    assert len(rows) >= 20 and answered == 2 * len(rows)  # an SP and an RG request per test turn
    assert (tmp_path / "ray.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()
    assert "ray SP+RG (2 workers): worker 0:" in on_ray and "answers; worker 1: 0 answers" not in on_ray
    assert f"{len(rows)} requests ({len(rows)} cached, 0 sent)" in again  # the local executor replays Ray's answers
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "local.jsonl").read_bytes()


def test_workers_that_cannot_be_placed_fail_fast_with_the_reason(tmp_path):
    with FakeLLM(tmp_path / "answered.jsonl") as url:
        started = time.monotonic()
        result = build(url, tmp_path / "ds", tmp_path / "cache", "--executor", "ray", "--workers", "2",
                       "--worker-gpus", "1", check=False)
        seconds = time.monotonic() - started
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert "2 workers x (1 CPU, 1 GPU) cannot be placed: GPU: 2 needed, 0 in the cluster" in message, message[-2000:]
    assert "Traceback" not in result.stderr and seconds < 60
    assert read_log(tmp_path / "answered.jsonl") == [] and not (tmp_path / "ds" / "manifest.json").exists()


def kill_mid_build(name: str, pattern: str, command: list[str], cache: Path, after: int) -> tuple[int, str, float]:
    """Run ``command`` and, once ``after`` answers are committed, SIGKILL the processes whose command line holds
    ``pattern``: (exit code, stderr, seconds from the kill to the end)."""
    import psutil

    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while committed(cache / "requests.sqlite") < after:
            assert child.poll() is None, f"{name}: " + child.communicate()[1][-3000:]
            assert time.monotonic() < deadline, name
            time.sleep(0.05)
        victims = [p for p in psutil.process_iter(["cmdline"]) if pattern in " ".join(p.info["cmdline"] or [])]
        assert victims, f"{name}: no process matches {pattern!r}"
        for p in victims:
            p.kill()
        killed = time.monotonic()
        _, stderr = child.communicate(timeout=120)
        return child.returncode, stderr, time.monotonic() - killed
    finally:
        if child.poll() is None:
            child.kill()


def test_a_lost_node_agent_or_raylet_stops_the_build_with_one_line_and_a_rerun_completes(local_build, tmp_path):
    """The runtime-env agent killed (no worker can be restarted), then, on the same command, the raylet killed (Ray
    ends the driver): each stops the build within a minute with exit 75 and one line, nothing recorded as a
    failure, no dataset written; a local rerun completes it with the bytes of an uninterrupted build."""
    out, cache = tmp_path / "ds", tmp_path / "cache"
    server = FakeLLM(latency=0.1).start()
    try:
        args = [*IPM, "build", "--source-path", str(ESCONV_JSON), "--stage", "all", "--limit", "3", "--engine",
                "openai", "--base-url", server.url, "--concurrency", "4", "--trim-tokenizer", "none", "--out",
                str(out), "--cache-dir", str(cache)]
        ray = [*args, "--executor", "ray", "--workers", "2"]
        for name, pattern, after in (("runtime-env agent", "ray::RuntimeEnvAgent", 40),
                                     ("raylet", "core/src/ray/raylet/raylet", 200)):
            code, stderr, seconds = kill_mid_build(name, pattern, ray, cache, after)
            assert code == 75 and seconds < 60, (name, code, seconds, stderr[-3000:])
            errors = [line for line in stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, (name, stderr[-3000:])
            assert "Traceback" not in stderr and "[state-dump]" not in stderr and "Raylet logs" not in stderr
            assert "run the same command again to resume" in " ".join(stderr.split())
            assert not (out / "manifest.json").exists()
            with sqlite3.connect(cache / "requests.sqlite") as con:
                assert con.execute("SELECT COUNT(*) FROM failures").fetchone()[0] == 0, name
            if name == "raylet":
                assert errors[0].startswith("error: the Ray cluster stopped the build: (raylet) Raylet is terminated.")
            else:
                assert "worker lost: worker" in errors[0] and "died 3 times in a row" in errors[0]
        kept = committed(cache / "requests.sqlite")
        build(server.url, out, cache)  # the same command on the local executor
    finally:
        server.stop()
    assert parquet(out) == parquet(local_build)
    m = manifest(out)
    assert m["complete"] is True and sent(m) == 527 - kept  # only what the stopped runs had not answered

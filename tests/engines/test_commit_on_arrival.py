"""Every answer is committed as it arrives, at any speed: what may sit answered but uncommitted is bounded by the
requests in flight (backpressure), so a SIGKILL loses at most those, however fast the server is."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence

from helpers import ESCONV_JSON
from ipm_prefdial.engines.base import Engine
from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.engines.requests import ChatRequest, ChatResult
from ipm_prefdial.engines.runner import run_sync
from ipm_prefdial.engines.streaming import stream_grouped
from ipm_prefdial.testing.fake_llm import FakeLLM, read_log

CONCURRENCY = 8


class InstantEngine(Engine):
    """Answers in no time; counts what it has produced."""

    name, model, concurrency = "instant", "instant", CONCURRENCY

    def __init__(self):
        self.produced = 0

    async def complete(self, request: ChatRequest) -> ChatResult:
        await asyncio.sleep(0)
        self.produced += 1
        return ChatResult(text="ok", parsed="ok", finish_reason="stop")

    def stream(self, requests: Sequence[ChatRequest]):
        return stream_grouped(requests, self.complete, self.concurrency)


class SlowCache(RequestCache):
    """A cache whose commits are slow (a busy disk, a busy process): records the widest gap between answers
    produced and answers committed."""

    def __init__(self, path, engine: InstantEngine):
        super().__init__(path)
        self.engine, self.committed, self.widest = engine, 0, 0

    def put(self, key, model, result):
        self.widest = max(self.widest, self.engine.produced - self.committed)
        time.sleep(0.002)
        super().put(key, model, result)
        self.committed += 1


def test_uncommitted_answers_never_exceed_the_requests_in_flight(tmp_path):
    engine = InstantEngine()
    requests = [ChatRequest.chat([{"role": "user", "content": f"q{i}"}], group=f"d{i % 40}") for i in range(400)]
    cache = SlowCache(tmp_path / "requests.sqlite", engine)
    results = run_sync(engine, requests, cache=cache)
    assert all(r.ok for r in results) and cache.committed == 400 == engine.produced
    assert cache.widest <= CONCURRENCY, f"{cache.widest} answers waited uncommitted (in flight: {CONCURRENCY})"


def test_a_killed_fast_build_loses_at_most_the_requests_in_flight(tmp_path):
    """The issue's scenario: a whole build against a fast server at --concurrency 64, SIGKILL part-way. The server's
    own log says what it answered; the cache must hold all of it but the requests in flight, and the rerun must
    send exactly what was lost."""
    concurrency = 64
    log = tmp_path / "answered.jsonl"
    server = FakeLLM(log).start()
    cache_dir, out = tmp_path / "cache", tmp_path / "ds"
    args = [sys.executable, "-m", "ipm_prefdial.cli", "build", "--source-path", str(ESCONV_JSON), "--stage", "all",
            "--limit", "4", "--engine", "openai", "--base-url", server.url, "--concurrency", str(concurrency),
            "--trim-tokenizer", "none",  # (the card's prompt lengths: seconds of each of three new processes)
            "--cache-dir", str(cache_dir), "--out", str(out)]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        db = cache_dir / "requests.sqlite"
        deadline = time.monotonic() + 120
        while True:
            assert child.poll() is None, "the build finished before it could be killed"
            assert time.monotonic() < deadline
            if db.is_file():
                try:
                    with sqlite3.connect(db, timeout=5) as con:
                        if con.execute("SELECT COUNT(*) FROM answers").fetchone()[0] >= 500:
                            break
                except sqlite3.OperationalError:  # the schema is not there yet
                    pass
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        time.sleep(0.5)  # requests in flight finish on the server side
        with sqlite3.connect(db) as con:
            committed = con.execute("SELECT COUNT(*) FROM answers").fetchone()[0] + \
                con.execute("SELECT COUNT(*) FROM failures").fetchone()[0]
        first = {line["sha256"] for line in read_log(log)}
        lost = len(first) - committed
        assert 0 <= lost <= concurrency, f"{len(first)} answered by the server, {committed} committed"
        before = len(read_log(log))
        rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        resent = {line["sha256"] for line in read_log(log)[before:]} & first
        assert len(resent) == lost, f"{len(resent)} answered requests sent again, {lost} were lost"
        manifest = json.loads((out / "manifest.json").read_text())
        parquet = {p.name + p.parent.name: p.read_bytes() for p in sorted(out.rglob("*.parquet"))}
        answered = len(read_log(log))
        third = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert third.returncode == 0, third.stderr
        assert len(read_log(log)) == answered  # the server saw nothing of the third run
        again = json.loads((out / "manifest.json").read_text())
        assert all(t["accounting"]["sent"] == 0 for t in again["mining"].values())
        assert {p.name + p.parent.name: p.read_bytes() for p in sorted(out.rglob("*.parquet"))} == parquet
        assert manifest["counts"] == again["counts"]
    finally:
        if child.poll() is None:
            child.kill()
        server.stop()

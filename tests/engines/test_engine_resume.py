"""Resume after SIGKILL, with the real embedded engine (llama.cpp serving SmolLM2 through xllamacpp).

A child process runs a batch through a counting reverse proxy in front of the engine and is killed with
SIGKILL part-way; the rerun must send exactly the requests whose result was not committed, and a second rerun
must send nothing and return the same texts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.engines.openai_http import OpenAIEngine
from ipm_prefdial.engines.requests import TRANSIENT, ChatRequest, Sampling
from ipm_prefdial.engines.runner import Stats, run_sync

MODEL = "smol"  # the id in cache keys; given explicitly, so no /models lookup decides it
N = 30
MAX_TOKENS = 24
KILL_AFTER = 5  # answers in the cache before the child is killed


PROMPT = "Request {i}: reply with one short friendly sentence."


def user_message(i: int) -> str:
    return PROMPT.format(i=i)


def make_requests() -> list[ChatRequest]:
    return [ChatRequest.chat([{"role": "user", "content": user_message(i)}],
                             sampling=Sampling(temperature=0.7, max_tokens=MAX_TOKENS)) for i in range(N)]


# The child builds the very same requests (the test checks that their keys match the ones computed here).
CHILD = textwrap.dedent(f"""
    import sys
    from ipm_prefdial.engines.requests import ChatRequest, Sampling
    from ipm_prefdial.engines.cache import RequestCache
    from ipm_prefdial.engines.runner import run_sync
    from ipm_prefdial.engines.openai_http import OpenAIEngine

    base_url, cache_path = sys.argv[1], sys.argv[2]
    requests = [ChatRequest.chat([{{"role": "user", "content": {PROMPT!r}.format(i=i)}}],
                                 sampling=Sampling(temperature=0.7, max_tokens={MAX_TOKENS})) for i in range({N})]
    engine = OpenAIEngine(base_url, {MODEL!r}, concurrency=1, structured="none")
    run_sync(engine, requests, cache=RequestCache(cache_path))
    print("child finished")
""")


def test_resume_after_sigkill_sends_only_what_was_not_committed(proxy, tmp_path):
    cache_path = tmp_path / "requests.sqlite"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    requests = make_requests()
    keys = [r.key(f"served:{MODEL}") for r in requests]
    assert len(set(keys)) == N
    cache = RequestCache(cache_path)  # a second connection on the child's file (WAL: concurrent readers)
    log = (tmp_path / "child.log").open("wb")
    child = subprocess.Popen([sys.executable, str(script), proxy.url + "/v1", str(cache_path)],
                             stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 180
        while cache.counts()["answers"] < KILL_AFTER:
            assert child.poll() is None, f"the child exited early: {(tmp_path / 'child.log').read_text()}"
            assert time.monotonic() < deadline, "no answers from the child within 180 s"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.close()
    assert "child finished" not in (tmp_path / "child.log").read_text()
    sent_by_child = len(proxy.bodies)

    # what the killed run committed: every row belongs to one of our requests (same keys, same model id)
    answers_before = cache.answers(keys)
    failures_before = cache.failures(keys)
    counts = cache.counts()
    assert counts == {"answers": len(answers_before), "failures": len(failures_before)}
    assert KILL_AFTER <= len(answers_before) < N, "the child was not killed part-way"
    kept = set(answers_before) | {k for k, r in failures_before.items() if r.error_kind not in TRANSIENT}
    assert sent_by_child >= len(kept)
    assert {body["model"] for body in proxy.bodies} == {MODEL}

    stats = Stats()
    results = run_sync(OpenAIEngine(proxy.url + "/v1", MODEL, concurrency=1, structured="none"), requests,
                       cache=cache, stats=stats)
    resent = proxy.messages(sent_by_child)
    kept_messages = {user_message(i) for i, k in enumerate(keys) if k in kept}
    assert not kept_messages & set(resent), "a request whose result was in the cache was sent again"
    assert sorted(resent) == sorted(user_message(i) for i, k in enumerate(keys) if k not in kept)
    assert stats.sent == N - len(kept) == len(resent)
    assert stats.cache_hits == len(answers_before)
    assert stats.replayed_failures == len(kept) - len(answers_before)
    assert {body["model"] for body in proxy.bodies} == {MODEL}

    answers_after, failures_after = cache.answers(keys), cache.failures(keys)
    for i, (key, result) in enumerate(zip(keys, results, strict=True)):
        if key in answers_before:  # served from the cache, unchanged
            assert result.from_cache and result.text == answers_before[key].text
        if result.ok:
            assert result.text and result.text.strip() and key in answers_after
            assert result.finish_reason == "stop"
        else:  # a failure (with 24 tokens SmolLM2 sometimes runs out: "truncated") is recorded, not an answer
            assert result.error_kind and key in failures_after and key not in answers_after, (i, result)
    assert len(answers_after) + len(failures_after) == N
    assert any(r.ok for r in results)

    # a full rerun sends nothing and returns the same texts
    sent_before_rerun = len(proxy.bodies)
    again_stats = Stats()
    again = run_sync(OpenAIEngine(proxy.url + "/v1", MODEL, concurrency=1, structured="none"), requests,
                     cache=cache, stats=again_stats)
    assert len(proxy.bodies) == sent_before_rerun
    assert again_stats.sent == 0 and again_stats.attempts == 0
    assert again_stats.cache_hits + again_stats.replayed_failures == N
    assert [r.text for r in again] == [r.text for r in results]
    assert [r.error_kind for r in again] == [r.error_kind for r in results]
    assert all(r.from_cache for r in again)
    cache.close()

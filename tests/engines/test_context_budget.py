"""A prompt fitted to a context budget is keyed, seeded and recorded as it was sent: a different budget never
replays answers made from another prompt, and `miner.seed` / `miner.prompt_sha256` describe the request that
was sent, while the row's `prompt` stays the full gold history."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from helpers import fake_build_args
from ipm_prefdial.cli import app
from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.engines.openai_http import OpenAIEngine
from ipm_prefdial.engines.requests import ChatRequest, Sampling
from ipm_prefdial.engines.runner import Stats, run_sync
from ipm_prefdial.testing.fake_llm import FakeLLM

runner = CliRunner()


def long_request() -> ChatRequest:
    history = []
    for i in range(12):
        history += [{"role": "user", "content": f"Seeker line {i}: " + "I keep thinking about it. " * 12},
                    {"role": "assistant", "content": f"Supporter line {i}: " + "That sounds hard. " * 12}]
    messages = [{"role": "system", "content": "Be kind."}, *history, {"role": "user", "content": "What now?"}]
    return ChatRequest.chat(messages, sampling=Sampling(0.7, 0.95, 32))


def test_another_budget_is_another_request(tmp_path):
    request = long_request()
    server = FakeLLM(keep_bodies=True).start()
    url = server.url
    with RequestCache.in_dir(tmp_path) as cache:
        full = Stats()
        run_sync(OpenAIEngine(url, "m", structured="none"), [request], cache=cache, stats=full)
        small = Stats()
        run_sync(OpenAIEngine(url, "m", structured="none", context_tokens=400), [request], cache=cache, stats=small)
        again = Stats()
        run_sync(OpenAIEngine(url, "m", structured="none", context_tokens=400), [request], cache=cache, stats=again)
    server.stop()
    assert (full.sent, small.sent, again.sent) == (1, 1, 0)  # the fitted prompt is not the full one's answer
    assert small.truncated_prompts == 1 and again.truncated_prompts == 1 and full.truncated_prompts == 0
    first, second = server.bodies
    assert len(second["messages"]) < len(first["messages"]) == 26
    assert second["messages"][0] == {"role": "system", "content": "Be kind."}
    assert second["messages"][-1] == {"role": "user", "content": "What now?"}
    assert second["seed"] != first["seed"]


def test_pair_rows_record_the_request_as_sent(tmp_path):
    server = FakeLLM(keep_bodies=True).start()
    out = tmp_path / "ds"
    result = runner.invoke(app, [*fake_build_args(server.url, "--no-judge", "--context-tokens", "700"),
                                 "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    server.stop()
    assert result.exit_code == 0, result.output
    sent = {body["seed"]: body for body in server.bodies}
    m = json.loads((out / "manifest.json").read_text())
    assert m["mining"]["rg"]["accounting"]["truncated_prompts"] > 0
    shortened = 0
    for config in ("strategy_pairs", "response_pairs", "joint_pairs"):
        for row in pq.read_table(out / f"data/{config}/train-00000-of-00001.parquet").to_pylist():
            body = sent[row["miner"]["seed"]]  # the seed recorded is a seed that was sent ...
            messages = body["messages"]  # ... with these messages, whose sha256 is recorded
            digest = hashlib.sha256(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
            assert row["miner"]["prompt_sha256"] == digest, row["id"]
            # system prompt and current turn kept (the SP format loses its oldest lines instead of messages)
            assert messages[0] == row["prompt"][0]
            assert row["prompt"][-1]["content"].endswith(messages[-1]["content"])
            if messages != row["prompt"]:
                shortened += 1  # the row keeps the full gold history
    assert shortened > 0

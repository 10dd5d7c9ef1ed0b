"""The engine layer with real parts: the embedded llama.cpp server and SmolLM2, a real HTTP client against it,
transformers on the same GGUF, and vLLM's request translation (vLLM itself is not installable here)."""

from __future__ import annotations

import asyncio
import json
import re

import jsonschema
import pytest
from typer.testing import CliRunner

from ipm_prefdial.cli import app
from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.engines.local import LocalEngine
from ipm_prefdial.engines.openai_http import OpenAIEngine
from ipm_prefdial.engines.requests import ChatRequest, Choice, JsonSchema, Sampling, estimate_tokens, fit_context
from ipm_prefdial.engines.runner import Stats, run_requests
from ipm_prefdial.engines.vllm_engine import VLLMEngine, request_spec
from ipm_prefdial.errors import SetupError
from ipm_prefdial.prompts import Prompts
from ipm_prefdial.strategies import STRATEGIES

PROMPTS = Prompts()
JUDGE_SCHEMA = {
    "type": "object",
    "properties": {
        "reply_a_error": {"enum": ["None", "Lack Empathy", "Early Emotion Shift", "Template Response"]},
        "reply_a_explanation": {"type": "string", "maxLength": 160},
    },
    "required": ["reply_a_error", "reply_a_explanation"],
    "additionalProperties": False,
}
SEEKER_LINES = ["I lost my job last week and I can't stop worrying.", "My sister stopped talking to me.",
                "I failed my driving test again.", "I feel so alone since I moved here.",
                "My dog died and the house feels empty.", "I can't sleep before exams.",
                "My boss yells at me every day.", "I am scared about my health results."]


def sp_request(line: str, **kwargs) -> ChatRequest:
    messages = [{"role": "system", "content": PROMPTS.sp_system}, {"role": "user", "content": f"seeker: {line}"}]
    return ChatRequest.chat(messages, sampling=Sampling(temperature=1.0, max_tokens=32), output=Choice(STRATEGIES),
                            **kwargs)


def test_strategy_choice_is_always_one_of_the_eight(local, loop):
    stats = Stats()
    results = loop.run_until_complete(run_requests(local, [sp_request(s) for s in SEEKER_LINES], stats=stats))
    assert all(r.ok for r in results), [r.error for r in results]
    assert all(r.parsed in STRATEGIES and r.text.strip() == r.parsed for r in results)
    assert stats.sent == 8 and stats.completion_tokens > 0 and stats.prompt_tokens > 8 * 100


def test_json_schema_answer_is_valid_json(local, loop):
    request = ChatRequest.chat(
        [{"role": "system", "content": "You review replies of a supporter. Answer in JSON."},
         {"role": "user", "content": "Seeker: I failed my exam.\nReply A: Just study harder next time.\n"
                                     "Which error does reply A make?"}],
        sampling=Sampling(temperature=0.7, max_tokens=200), output=JsonSchema.of(JUDGE_SCHEMA))
    (result,) = loop.run_until_complete(run_requests(local, [request]))
    assert result.ok, result.error
    jsonschema.validate(json.loads(result.text), JUDGE_SCHEMA)
    assert result.parsed == json.loads(result.text)


def test_openai_engine_talks_to_the_embedded_server_over_http(local, loop):
    engine = OpenAIEngine(local.base_url, concurrency=2)
    loop.run_until_complete(engine.start())
    try:
        assert engine.structured == "grammar"  # llama.cpp recognised from /models
        results = loop.run_until_complete(run_requests(engine, [sp_request(s) for s in SEEKER_LINES[:3]]))
    finally:
        loop.run_until_complete(engine.close())
    assert all(r.ok and r.parsed in STRATEGIES for r in results)


def test_one_dialogue_reuses_its_prefix_and_the_cache_replays(local, loop, tmp_path):
    history = [{"role": "system", "content": PROMPTS.rg_system}]
    requests = []
    for k, line in enumerate(SEEKER_LINES[:3]):
        history = history + [{"role": "user", "content": line}]
        requests.append(ChatRequest.chat(history, sampling=Sampling(max_tokens=40), group="d1"))
        history = history + [{"role": "assistant", "content": f"I hear you ({k})."}]
    cache = RequestCache(tmp_path / "c.sqlite")
    first = loop.run_until_complete(run_requests(local, requests, cache=cache))
    assert first[2].cached_tokens > 0  # the dialogue's growing prefix was reused by its slot
    stats = Stats()
    again = loop.run_until_complete(run_requests(local, requests, cache=cache, stats=stats))
    assert stats.sent == 0 and stats.cache_hits + stats.replayed_failures == 3
    assert [r.text for r in again] == [r.text for r in first]


def test_prompt_over_the_context_budget_loses_its_oldest_history(loop, smollm2):
    small = LocalEngine(slots=1, slot_context=512)  # a small slot keeps the test fast
    messages = [{"role": "system", "content": "You are a kind supporter."}]
    for k in range(40):
        messages.append({"role": "user" if k % 2 == 0 else "assistant", "content": f"message {k} " + "word " * 20})
    messages.append({"role": "user", "content": "What should I do now?"})
    request = ChatRequest.chat(messages, sampling=Sampling(max_tokens=32))
    assert estimate_tokens(request.messages) > small.slot_context
    stats = Stats()
    loop.run_until_complete(small.start())
    try:
        (result,) = loop.run_until_complete(run_requests(small, [request], stats=stats))
    finally:
        loop.run_until_complete(small.close())
    assert result.error_kind in (None, "truncated"), result.error
    assert result.truncated_messages > 0 and stats.truncated_prompts == 1
    assert 0 < result.prompt_tokens <= small.slot_context - 32


def test_fit_context_keeps_system_and_current_turn():
    msgs = [("system", "S"), ("user", "u0 " * 100), ("assistant", "a0 " * 100), ("user", "u1 " * 100),
            ("assistant", "a1"), ("user", "now")]
    request = ChatRequest(tuple(msgs), Sampling(max_tokens=10))
    fitted, dropped = fit_context(request, 100)
    assert fitted.messages[0] == ("system", "S") and fitted.messages[-1] == ("user", "now")
    assert [m[0] for m in fitted.messages[1:]] in (["user", "assistant", "user"], ["user"])
    assert dropped in (2, 4) and estimate_tokens(fitted.messages) <= 90
    sp = ChatRequest((("system", "S"), ("user", "\n".join(f"seeker: line {i} " + "x" * 40 for i in range(50)))),
                     Sampling(max_tokens=10))
    fitted, dropped = fit_context(sp, 200)
    assert dropped > 0 and fitted.messages[1][1].endswith("line 49 " + "x" * 40)
    assert fit_context(sp, None) == (sp, 0)


def test_keys_and_seeds_are_engine_independent_and_per_sample():
    a = sp_request("hello")
    b = sp_request("hello", sample=1)
    assert a.key("m") == sp_request("hello").key("m") and a.key("m") != b.key("m") and a.key("m") != a.key("n")
    assert a.seed("m") != b.seed("m") and 0 <= a.seed("m") < 2**31
    assert sp_request("hello", group="x").key("m") == a.key("m")  # scheduling is not content


def test_vllm_request_translation_without_vllm():
    choice = request_spec(sp_request("hi"), "Qwen/Qwen2.5-7B-Instruct")
    assert choice["sampling"]["structured_outputs"] == {"choice": list(STRATEGIES)}
    assert choice["sampling"]["max_tokens"] == 32 and choice["sampling"]["temperature"] == 1.0
    assert choice["sampling"]["seed"] == sp_request("hi").seed("Qwen/Qwen2.5-7B-Instruct")
    assert choice["messages"][0]["role"] == "system"
    judged = request_spec(ChatRequest.chat([{"role": "user", "content": "x"}], output=JsonSchema.of(JUDGE_SCHEMA)),
                          "m")
    # no free whitespace: a small model pads JSON with newlines until max_tokens otherwise
    assert judged["sampling"]["structured_outputs"] == {"json": JUDGE_SCHEMA, "disable_any_whitespace": True}
    plain = request_spec(ChatRequest.chat([{"role": "user", "content": "x"}]), "m")
    assert "structured_outputs" not in plain["sampling"] and plain["sampling"]["max_tokens"] == 128
    engine = VLLMEngine("Qwen/Qwen2.5-7B-Instruct", lora="runs/x/sp")
    with pytest.raises(SetupError, match=r"ipm_prefdial\[vllm\]"):
        asyncio.run(engine.start())


def test_transformers_engine_on_the_same_gguf(loop, smollm2):
    from ipm_prefdial.engines.transformers_engine import TransformersEngine

    gguf = smollm2
    engine = TransformersEngine(str(gguf.parent), gguf_file=gguf.name, batch_size=2)
    requests = [sp_request(SEEKER_LINES[0]),
                ChatRequest.chat([{"role": "user", "content": "Say one kind sentence."}],
                                 sampling=Sampling(temperature=0.0, max_tokens=24)),
                ChatRequest.chat([{"role": "user", "content": "Say hello."}], sampling=Sampling(temperature=0.0,
                                                                                             max_tokens=24))]
    results = loop.run_until_complete(run_requests(engine, requests))
    assert results[0].ok and results[0].parsed in STRATEGIES
    assert set(results[0].extra["label_logprobs"]) == set(STRATEGIES)
    for r in results[1:]:
        assert r.error_kind in (None, "truncated") and r.text and r.completion_tokens > 0
    # the label scores (prompt once, labels on its cached keys/values) equal a plain full-sequence scoring
    import torch

    tok, lm = engine._tok, engine._lm
    prompt = tok.apply_chat_template(requests[0].message_dicts(), tokenize=False, add_generation_prompt=True)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    for label in ("Question", "Providing Suggestions"):
        tail = tok(label, add_special_tokens=False)["input_ids"] + [engine._eos[0]]
        ids = torch.tensor([prompt_ids + tail])
        with torch.no_grad():
            logp = torch.log_softmax(lm(input_ids=ids).logits[0, :-1].float(), dim=-1)
        expected = sum(float(logp[len(prompt_ids) - 1 + j, t]) for j, t in enumerate(tail))
        assert results[0].extra["label_logprobs"][label] == pytest.approx(expected, abs=1e-3)


def test_engine_check_cli_prints_throughput(smollm2):
    result = CliRunner().invoke(app, ["engine-check", "--requests", "4", "--concurrency", "2", "--max-tokens", "16"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("requests/s: ") and float(line.split()[1]) > 0 for line in lines)
    assert any(line.startswith("output tokens/s: ") and float(line.split()[2]) > 0 for line in lines)
    assert "cache_hits" in result.output


def test_engine_check_against_the_test_server(fake_llm, tmp_path):
    """The fast twin: the same command and summary against the deterministic test server, with its cache."""
    args = ["engine-check", "--engine", "openai", "--base-url", fake_llm["url"], "--requests", "5",
            "--max-tokens", "16", "--cache-dir", str(tmp_path / "cache")]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "engine openai (fake-llm), concurrency 8" in first.output
    assert re.search(r"│ sent\s+│ 5 ", first.output) and re.search(r"│ cache_hits\s+│ 0 ", first.output)
    again = CliRunner().invoke(app, args)
    assert re.search(r"│ sent\s+│ 0 ", again.output) and re.search(r"│ cache_hits\s+│ 5 ", again.output)

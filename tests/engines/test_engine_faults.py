"""Fault injection for the ``openai`` engine: a scripted OpenAI-compatible server on 127.0.0.1.

Each POST /v1/chat/completions consumes the next scripted behaviour (429, 500, a hang past the timeout, a
malformed body, a truncated answer, a dropped connection, an answer outside the output constraint, ...); the
tests check the result, the attempts, what the server received, the run's accounting and what the cache kept.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from helpers.engines import Behaviour, FakeHandler, FakeServer, answer, completion
from ipm_prefdial.cli import app
from ipm_prefdial.engines.breaker import EngineStop
from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.engines.openai_http import OpenAIEngine
from ipm_prefdial.engines.requests import ChatRequest, ChatResult, Choice, JsonSchema, Sampling
from ipm_prefdial.engines.runner import Stats, run_sync

TIMEOUT = 0.5  # the engine's per-request timeout in these tests
HANG = 1.5  # a hanging handler outlasts it
SECRET = "sk-test-SECRET-123"


# -- scripted behaviours (the server is helpers.engines.FakeServer) ----------------------------------------
def status(code: int, body: str = '{"error": {"message": "scripted"}}', headers: dict | None = None) -> Behaviour:
    return lambda h: h.reply(code, body, headers)


def raw(body: bytes | str) -> Behaviour:
    return lambda h: h.reply(200, body)


def hang(seconds: float = HANG) -> Behaviour:
    def behave(h: FakeHandler) -> None:
        h.fake.stopping.wait(seconds)
        h.close_connection = True  # and never answer

    return behave


def drop() -> Behaviour:
    def behave(h: FakeHandler) -> None:
        h.close_connection = True  # the socket is closed without a byte of response

    return behave


def echo_auth(code: int, template: str = '{{"error": "invalid key {auth}"}}') -> Behaviour:
    """An error page that repeats the Authorization header it received (as some proxies do)."""
    return lambda h: h.reply(code, template.format(auth=h.headers.get("Authorization")))


# -- helpers -----------------------------------------------------------------------------------------------
def req(text: str = "How are you?", output=None, max_tokens: int = 16) -> ChatRequest:
    return ChatRequest.chat([{"role": "user", "content": text}], sampling=Sampling(max_tokens=max_tokens),
                            output=output)


def make_engine(server: FakeServer, **kwargs) -> OpenAIEngine:
    # reseeds=0: one answer per scripted request (test_an_answer_that_does_not_parse_is_asked_again_with_new_seeds)
    options = {"concurrency": 1, "timeout": TIMEOUT, "max_attempts": 3, "backoff_s": 0.01, "reseeds": 0} | kwargs
    return OpenAIEngine(server.url + "/v1", "fake", **options)


def run(server: FakeServer, requests: list[ChatRequest], cache: RequestCache, *, engine: OpenAIEngine | None = None,
        **kwargs) -> tuple[list[ChatResult], dict]:
    stats = Stats()
    results = run_sync(engine or make_engine(server), requests, cache=cache, stats=stats, **kwargs)
    assert len(results) == len(requests)
    return results, stats.as_dict()


def expect(stats: dict, **want) -> None:
    got = {k: stats[k] for k in want}
    assert got == want, stats


def keys(requests: list[ChatRequest]) -> list[str]:
    return [r.key("served:fake") for r in requests]  # an endpoint is named by the model it serves


# -- retried faults ----------------------------------------------------------------------------------------
def test_429_honours_retry_after_then_answers(serve, cache):
    server = serve([status(429, headers={"Retry-After": "0.2"})])
    requests = [req()]
    [result], stats = run(server, requests, cache)
    assert result.ok and result.text == "Fine, thanks." and result.attempts == 2
    assert server.count == 2
    waited = server.posts[1]["t"] - server.posts[0]["t"]
    assert waited >= 0.19, f"the engine retried after {waited:.3f} s, not the 0.2 s the server asked for"
    expect(stats, requests=1, sent=1, attempts=2, failures={}, cache_hits=0, replayed_failures=0,
           prompt_tokens=10, completion_tokens=3, cached_prompt_tokens=4)
    assert result.cached_tokens == 4
    assert set(cache.answers(keys(requests))) == set(keys(requests))
    assert cache.failures(keys(requests)) == {}


def test_500_then_answer(serve, cache):
    server = serve([status(500)])
    requests = [req()]
    [result], stats = run(server, requests, cache)
    assert result.ok and result.attempts == 2 and server.count == 2
    expect(stats, sent=1, attempts=2, failures={}, cache_hits=0, replayed_failures=0)
    assert list(cache.answers(keys(requests))) == keys(requests)


def test_500_on_every_attempt_is_a_recorded_failure_and_resent_on_rerun(serve, cache):
    server = serve([status(500)] * 3)
    requests = [req()]
    [result], stats = run(server, requests, cache)
    assert not result.ok and result.error_kind == "server_error" and result.attempts == 3
    assert "HTTP 500" in result.error and result.text is None
    assert server.count == 3
    expect(stats, sent=1, attempts=3, failures={"server_error": 1}, cache_hits=0, replayed_failures=0,
           completion_tokens=0)
    assert cache.answers(keys(requests)) == {}
    assert cache.failures(keys(requests))[keys(requests)[0]].error_kind == "server_error"

    # server_error is transient: the rerun sends it again (the server now answers) and the answer replaces it
    [again], stats = run(server, requests, cache)
    assert again.ok and again.attempts == 1 and not again.from_cache
    assert server.count == 4
    expect(stats, sent=1, attempts=1, failures={}, cache_hits=0, replayed_failures=0)
    assert list(cache.answers(keys(requests))) == keys(requests)
    assert cache.failures(keys(requests)) == {}

    [third], stats = run(server, requests, cache)
    assert third.from_cache and third.text == again.text and server.count == 4
    expect(stats, sent=0, attempts=0, cache_hits=1)


def test_hang_past_timeout_then_answer(serve, cache):
    server = serve([hang()])
    requests = [req()]
    started = time.perf_counter()
    [result], stats = run(server, requests, cache)
    assert time.perf_counter() - started < HANG, "the engine waited for the hung request instead of timing out"
    assert result.ok and result.attempts == 2 and server.count == 2
    expect(stats, sent=1, attempts=2, failures={}, cache_hits=0, replayed_failures=0)
    assert list(cache.answers(keys(requests))) == keys(requests)


def test_hang_on_every_attempt_is_a_timeout(serve, cache):
    server = serve([], default=hang())
    requests = [req()]
    [result], stats = run(server, requests, cache)
    assert result.error_kind == "timeout" and result.attempts == 3 and server.count == 3
    expect(stats, sent=1, attempts=3, failures={"timeout": 1}, cache_hits=0, replayed_failures=0)
    assert cache.answers(keys(requests)) == {}
    assert cache.failures(keys(requests))[keys(requests)[0]].error_kind == "timeout"


def test_malformed_body_then_answer(serve, cache):
    server = serve([raw("{not json")])
    requests = [req()]
    [result], stats = run(server, requests, cache)
    assert result.ok and result.text == "Fine, thanks." and result.attempts == 2 and server.count == 2
    expect(stats, sent=1, attempts=2, failures={}, cache_hits=0, replayed_failures=0)
    assert list(cache.answers(keys(requests))) == keys(requests)


def test_always_malformed_is_malformed_response(serve, cache):
    server = serve([], default=raw("{not json"))
    requests = [req()]
    [result], stats = run(server, requests, cache)
    assert result.error_kind == "malformed_response" and result.attempts == 3 and server.count == 3
    assert result.text is None and result.parsed is None
    expect(stats, sent=1, attempts=3, failures={"malformed_response": 1}, cache_hits=0, replayed_failures=0)
    assert cache.answers(keys(requests)) == {}
    assert cache.failures(keys(requests))[keys(requests)[0]].error_kind == "malformed_response"


def test_dropped_connection_then_answer(serve, cache):
    server = serve([drop()])
    requests = [req()]
    [result], stats = run(server, requests, cache)
    assert result.ok and result.attempts == 2 and server.count == 2
    expect(stats, sent=1, attempts=2, failures={}, cache_hits=0, replayed_failures=0)
    assert list(cache.answers(keys(requests))) == keys(requests)


def test_dropped_connection_every_time_is_a_connection_failure(serve, cache):
    server = serve([], default=drop())
    requests = [req()]
    [result], stats = run(server, requests, cache)
    assert result.error_kind == "connection" and result.attempts == 3 and server.count == 3
    expect(stats, sent=1, attempts=3, failures={"connection": 1})
    assert cache.answers(keys(requests)) == {}


# -- answers that are failures (not retried; replayed from the cache) -------------------------------------
def test_truncated_answer_is_a_failure_replayed_on_rerun(serve, cache):
    server = serve([answer("I think that", finish="length")])
    requests = [req()]
    key = keys(requests)[0]
    [result], stats = run(server, requests, cache)
    assert result.error_kind == "truncated" and result.attempts == 1 and server.count == 1
    assert result.text == "I think that" and result.finish_reason == "length"
    expect(stats, sent=1, attempts=1, failures={"truncated": 1}, cache_hits=0, replayed_failures=0)
    assert cache.answers([key]) == {}
    assert cache.failures([key])[key].error_kind == "truncated"

    [replayed], stats = run(server, requests, cache)
    assert replayed.error_kind == "truncated" and replayed.from_cache and replayed.text == "I think that"
    assert server.count == 1
    expect(stats, sent=0, attempts=0, replayed_failures=1, cache_hits=0, failures={"truncated": 1})

    [resent], stats = run(server, requests, cache, retry_failed=True)
    assert resent.ok and not resent.from_cache and resent.text == "Fine, thanks."
    assert server.count == 2
    expect(stats, sent=1, attempts=1, replayed_failures=0, cache_hits=0, failures={})
    assert list(cache.answers([key])) == [key]
    assert cache.failures([key]) == {}


def test_client_error_is_not_retried(serve, cache):
    server = serve([status(400, '{"error": "unknown parameter"}')])
    requests = [req()]
    key = keys(requests)[0]
    [result], stats = run(server, requests, cache)
    assert result.error_kind == "client_error" and result.attempts == 1 and server.count == 1
    assert "HTTP 400" in result.error and "unknown parameter" in result.error
    expect(stats, sent=1, attempts=1, failures={"client_error": 1}, cache_hits=0, replayed_failures=0)
    assert cache.answers([key]) == {}
    assert cache.failures([key])[key].error_kind == "client_error"

    [replayed], stats = run(server, requests, cache)
    assert replayed.error_kind == "client_error" and replayed.from_cache and server.count == 1
    expect(stats, sent=0, replayed_failures=1)


def test_context_overflow_is_its_own_kind(serve, cache):
    server = serve([status(400, '{"error": {"message": "request exceeds the context length"}}')])
    [result], stats = run(server, [req()], cache)
    assert result.error_kind == "context" and result.attempts == 1 and server.count == 1
    expect(stats, failures={"context": 1})


def test_choice_answer_outside_the_labels_is_invalid_output(serve, cache):
    labels = ("yes", "no")
    # /models says owned_by "test": the engine asks for a one-field JSON object {"answer": <label>}
    server = serve([answer("maybe"), answer('{"answer": "maybe"}'), answer('{"reply": "yes"}'), answer(""),
                    answer('{"answer": "Yes"}')])
    requests = [req(f"Question {i}?", output=Choice(labels)) for i in range(5)]
    results, stats = run(server, requests, cache, engine=make_engine(server, structured="auto"))
    schema = server.posts[0]["body"]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["answer"]["enum"] == list(labels)
    assert [r.error_kind for r in results] == ["invalid_output", "invalid_output", "invalid_output", "empty", None]
    assert [r.attempts for r in results] == [1] * 5 and server.count == 5  # a property of the answer: not retried
    assert results[4].parsed == "yes"
    for r in results:
        assert (r.ok and r.parsed in labels) or (not r.ok and r.parsed is None)
    expect(stats, sent=5, attempts=5, failures={"invalid_output": 3, "empty": 1})
    ks = keys(requests)
    assert set(cache.failures(ks)) == set(ks[:4]) and set(cache.answers(ks)) == {ks[4]}


def test_an_answer_that_does_not_parse_is_asked_again_with_new_seeds(serve, cache):
    server = serve([answer('{"answer": "maybe"}'), answer('{"answer": "perhaps"}'), answer('{"answer": "no"}')]
                   + [answer("nonsense")] * 3)
    requests = [req("Question 0?", output=Choice(("yes", "no"))), req("Question 1?", output=Choice(("yes", "no")))]
    results, stats = run(server, requests, cache, engine=make_engine(server, structured="auto", reseeds=2))
    first, second = results
    assert (first.error_kind, first.parsed, first.attempts) == (None, "no", 3)
    assert (first.prompt_tokens, first.completion_tokens) == (30, 9)  # the three answers were all paid for
    seeds = [post["body"]["seed"] for post in server.posts]
    assert len(set(seeds[:3])) == 3 and first.extra == {"reseeded": 2, "seed": seeds[2]}
    assert (second.error_kind, second.attempts) == ("invalid_output", 3) and server.count == 6  # at most 2 more
    expect(stats, sent=2, attempts=6, reseeded=2, failures={"invalid_output": 1})


def test_choice_without_server_side_constraint_parses_the_text(serve, cache):
    server = serve([answer("No."), answer("Perhaps not"), answer('"yes"')])
    requests = [req(f"Question {i}?", output=Choice(("yes", "no"))) for i in range(3)]
    results, _ = run(server, requests, cache, engine=make_engine(server, structured="none"))
    assert "response_format" not in server.posts[0]["body"] and "grammar" not in server.posts[0]["body"]
    assert [(r.error_kind, r.parsed) for r in results] == [(None, "no"), ("invalid_output", None), (None, "yes")]


SCORE = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}},
         "required": ["score"], "additionalProperties": False}


def test_json_schema_violation_is_invalid_output(serve, cache):
    texts = ['{"score": "high"}', '{"score": 9}', '{"score": 3, "why": "x"}', "{}", "score: 3", '["score", 3]',
             '```json\n{"score": 4}\n```', '{"score": 2}']
    server = serve([answer(t) for t in texts])
    requests = [req(f"Rate {i}.", output=JsonSchema.of(SCORE)) for i in range(len(texts))]
    results, stats = run(server, requests, cache)
    assert server.posts[0]["body"]["response_format"]["json_schema"]["schema"] == SCORE
    assert [r.error_kind for r in results] == ["invalid_output"] * 6 + [None, None]
    assert [r.parsed for r in results[6:]] == [{"score": 4}, {"score": 2}]
    assert all(r.attempts == 1 for r in results) and server.count == len(texts)
    for r in results:
        if r.ok:
            jsonschema.validate(r.parsed, SCORE)
        else:
            assert r.parsed is None and r.error.startswith("JSON does not fit the schema")
    expect(stats, sent=8, attempts=8, failures={"invalid_output": 6})
    ks = keys(requests)
    assert set(cache.failures(ks)) == set(ks[:6]) and set(cache.answers(ks)) == set(ks[6:])
    for cached in cache.answers(ks).values():  # what the cache will serve later is valid too
        jsonschema.validate(cached.parsed, SCORE)


MALFORMED = {
    "not json": "{not json",
    "empty body": "",
    "json null": "null",
    "json list": "[]",
    "no choices": '{"id": "x"}',
    "empty choices": '{"choices": []}',
    "choices not a list": '{"choices": "abc"}',
    "message not an object": '{"choices": [{"message": "hi", "finish_reason": "stop"}]}',
    "content not a string": '{"choices": [{"message": {"content": ["hi"]}, "finish_reason": "stop"}]}',
    "usage not an object": '{"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "usage": [1]}',
    "token count not a number": '{"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": "ten"}}',
    "token count NaN": '{"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": NaN}}',
    "details not an object": '{"choices": [{"message": {"content": "hi"}}], '
                             '"usage": {"prompt_tokens_details": "x"}}',
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_bodies_never_become_answers(serve, cache, body):
    server = serve([], default=raw(body))
    requests = [req()]
    [result], stats = run(server, requests, cache)
    assert not result.ok and result.error_kind == "malformed_response"
    assert result.attempts == 3 and server.count == 3
    expect(stats, sent=1, attempts=3, failures={"malformed_response": 1})
    assert cache.answers(keys(requests)) == {}


@pytest.mark.parametrize("body", [
    '{"choices": [{"message": {"content": null}, "finish_reason": "stop"}]}',
    '{"choices": [{"message": {"role": "assistant"}, "finish_reason": "stop"}]}',
    '{"choices": [{"message": {"content": "  \\n "}, "finish_reason": "stop"}]}',
], ids=["null content", "no content", "blank content"])
def test_empty_answers_are_failures(serve, cache, body):
    server = serve([], default=raw(body))
    [result], stats = run(server, [req()], cache)
    assert result.error_kind == "empty" and result.attempts == 1 and server.count == 1
    expect(stats, failures={"empty": 1})


def test_infinite_token_count_is_malformed_not_a_crash(serve, cache):
    body = '{"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1e999}}'
    server = serve([], default=raw(body))
    [result], _ = run(server, [req()], cache)
    assert result.error_kind == "malformed_response"


def test_mixed_batch_accounting(serve, cache):
    """One batch through one worker: every fault in turn, accounted per request and in total."""
    server = serve([answer(), status(429, headers={"Retry-After": "0"}), answer(), answer("cut", finish="length"),
                    status(400), drop(), raw("{not json"), answer()])
    requests = [req(f"Message {i}") for i in range(5)]
    results, stats = run(server, requests, cache)
    assert [(r.error_kind, r.attempts) for r in results] == [
        (None, 1), (None, 2), ("truncated", 1), ("client_error", 1), (None, 3)]
    assert server.count == 8
    expect(stats, requests=5, sent=5, attempts=8, failures={"client_error": 1, "truncated": 1}, cache_hits=0,
           replayed_failures=0, prompt_tokens=40, completion_tokens=12, cached_prompt_tokens=16)
    ks = keys(requests)
    assert set(cache.answers(ks)) == {ks[0], ks[1], ks[4]} and set(cache.failures(ks)) == {ks[2], ks[3]}

    results2, stats = run(server, requests, cache)
    assert server.count == 8
    assert [r.error_kind for r in results2] == [r.error_kind for r in results]
    assert [r.text for r in results2] == [r.text for r in results]
    expect(stats, requests=5, sent=0, attempts=0, cache_hits=3, replayed_failures=2,
           failures={"client_error": 1, "truncated": 1})


# -- secrets -------------------------------------------------------------------------------------------------
def _all_bytes(directory: Path) -> bytes:
    files = [p for p in directory.rglob("*") if p.is_file()]
    assert files, directory
    return b"".join(p.read_bytes() for p in files)


def test_api_key_is_sent_but_never_recorded(serve, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server = serve([echo_auth(400)] + [echo_auth(500)] * 3
                   + [echo_auth(200, '{{"choices": "not for {auth}"}}')] * 3 + [answer("All good.")])
    cache_dir = tmp_path / "secret-cache"
    engine = make_engine(server)
    requests = [req("one"), req("two"), req("three"), req("four")]
    with RequestCache(cache_dir / "c.sqlite") as cache:
        results, stats = run(server, requests, cache, engine=engine)
        assert cache.counts() == {"answers": 1, "failures": 3}
    assert [r.error_kind for r in results] == ["client_error", "server_error", "malformed_response", None]
    assert server.count == 8
    assert {p["auth"] for p in server.posts} == {f"Bearer {SECRET}"}
    for r in results[:3]:
        assert "***" in r.error, r.error  # the key was echoed, and scrubbed
        assert SECRET not in r.error
    assert SECRET not in json.dumps([r.to_json() for r in results])
    stored = _all_bytes(cache_dir)
    assert b"All good." in stored and b"***" in stored  # the scan sees what was written (WAL included)
    assert SECRET.encode() not in stored
    assert SECRET not in json.dumps(engine.describe()) and SECRET not in json.dumps(stats)
    assert engine.describe()["base_url"] == server.url + "/v1"


@pytest.mark.parametrize("code,cut", [(500, 200), (400, 300)])
def test_api_key_cut_by_truncation_is_still_scrubbed(serve, cache, monkeypatch, code, cut):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    prefix = "x" * (cut - len("Bearer ") - 14)  # the cut falls after "sk-test-SECRET"
    server = serve([], default=echo_auth(code, prefix + "{auth}"))
    [result], _ = run(server, [req()], cache)
    assert result.error_kind in ("server_error", "client_error")
    assert "SECRET" not in result.error, result.error


def test_engine_check_cli_with_key(serve, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server = serve([echo_auth(400)])
    cache_dir = tmp_path / "cli-cache"
    result = CliRunner().invoke(app, ["engine-check", "--engine", "openai", "--base-url", server.url + "/v1",
                                      "--requests", "2", "--cache-dir", str(cache_dir)])
    assert result.exit_code == 0, result.output
    assert server.count == 2 and {p["auth"] for p in server.posts} == {f"Bearer {SECRET}"}
    assert {p["body"]["model"] for p in server.posts} == {"fake"}  # discovered through GET /v1/models
    assert "/v1/models" in server.gets
    lines = result.output.splitlines()
    assert any("requests/s" in line for line in lines), result.output
    assert any("output tokens/s" in line for line in lines), result.output
    assert "client_error: 1" in result.output, result.output
    assert SECRET not in result.output and SECRET not in result.stdout + result.stderr
    with RequestCache.in_dir(cache_dir) as cache:
        assert cache.counts() == {"answers": 1, "failures": 1}
    assert SECRET.encode() not in _all_bytes(cache_dir)


# -- an endpoint that is gone, or refuses what we send: the run stops, nothing is recorded ------------------------
def test_a_refused_key_stops_the_run_before_anything_is_sent(serve, cache):
    server = serve(models=status(401, '{"error": {"message": "Incorrect API key provided: sk-te***123."}}'))
    started = time.perf_counter()
    with pytest.raises(EngineStop) as stopped:
        run(server, [req("one"), req("two")], cache)
    assert time.perf_counter() - started < 2
    assert stopped.value.exit_code == 1 and stopped.value.kind == "HTTP 401"
    assert str(stopped.value).startswith(f"{server.url}/v1: HTTP 401: GET /models: Incorrect API key provided")
    assert server.count == 0 and cache.counts() == {"answers": 0, "failures": 0}


def test_an_unknown_model_stops_the_run_at_its_first_answer_and_records_nothing(serve, cache):
    server = serve([answer("Fine.")], default=status(404, '{"error": {"message": "The model `fake` does not exist."}}'))
    requests = [req(f"Message {i}") for i in range(6)]
    with pytest.raises(EngineStop) as stopped:
        run(server, requests, cache)
    assert stopped.value.exit_code == 1
    assert "HTTP 404: POST /chat/completions: The model `fake` does not exist." in str(stopped.value)
    assert server.count == 2 and cache.counts() == {"answers": 1, "failures": 0}  # the answer before it is kept


def test_an_endpoint_that_refuses_every_request_stops_after_three_and_forgets_them(serve, cache):
    refusal = '{"error": {"message": "Unrecognized request argument supplied: seed", "type": "invalid_request_error"}}'
    server = serve([], default=status(400, refusal))
    requests = [req(f"Message {i}") for i in range(10)]
    with pytest.raises(EngineStop) as stopped:
        run(server, requests, cache)
    assert stopped.value.exit_code == 1
    assert str(stopped.value) == (f"{server.url}/v1: HTTP 400: the first requests of 3 dialogues were refused: "
                                  "Unrecognized request argument supplied: seed")
    assert server.count == 3
    assert cache.counts() == {"answers": 0, "failures": 0}  # not replayed as answers once the options are fixed


def test_a_refusal_after_answers_is_the_request_s_own(serve, cache):
    server = serve([answer(), status(400), status(400), status(400), answer()])
    results, stats = run(server, [req(f"Message {i}") for i in range(5)], cache)
    assert [r.error_kind for r in results] == [None, "client_error", "client_error", "client_error", None]
    expect(stats, failures={"client_error": 3})


def test_a_server_that_stops_answering_is_given_up_after_give_up_after(serve, cache):
    server = serve([answer(), answer()], default=status(503))
    engine = make_engine(server, give_up_after=1.0, max_attempts=100, backoff_s=0.05)
    requests = [req(f"Message {i}") for i in range(20)]
    started = time.perf_counter()
    with pytest.raises(EngineStop) as stopped:
        run(server, requests, cache, engine=engine)
    waited = time.perf_counter() - started
    assert 1.0 <= waited < 3.0, waited
    assert stopped.value.exit_code == 75 and stopped.value.kind == "no answer for 1 s"
    assert "server_error: HTTP 503" in stopped.value.detail
    assert cache.counts() == {"answers": 2, "failures": 0}  # the two answers kept; no failure recorded


def test_a_slow_server_that_keeps_answering_is_not_given_up(serve, cache):
    def slow(h: FakeHandler) -> None:
        time.sleep(0.3)
        h.reply(200, completion("Late, but here."))

    server = serve([], default=slow)
    engine = make_engine(server, give_up_after=0.2, timeout=5)
    results, stats = run(server, [req(f"Message {i}") for i in range(3)], cache, engine=engine)
    assert all(r.ok for r in results)  # no failure, so no giving up, however long an answer takes


def test_a_long_retry_after_is_honoured_in_full_while_the_engine_answers(serve, cache):
    """Another stream's answers keep the engine alive (give-up after 0.3 s): the 1 s retry-after of the first request
    is waited in full, not cut short when the backoff wakes to check the give-up deadline."""
    def slow(h: FakeHandler) -> None:
        time.sleep(0.1)
        h.reply(200, completion("Here."))

    server = serve([status(429, headers={"Retry-After": "1"})], default=slow)
    engine = make_engine(server, give_up_after=0.3, concurrency=2)
    requests = [ChatRequest.chat([{"role": "user", "content": f"m{i}"}], sampling=Sampling(max_tokens=16),
                                 group=f"d{i % 2}") for i in range(24)]
    results, _ = run(server, requests, cache, engine=engine)
    assert all(r.ok for r in results)
    first = server.posts[0]
    again = next(p for p in server.posts[1:] if p["body"]["messages"] == first["body"]["messages"])
    assert again["t"] - first["t"] >= 0.99


def test_a_content_filter_refusing_whole_dialogues_does_not_stop_the_run(serve, cache):
    """Azure's content filter answers 400 for turns about self-harm, often before anything else has answered: those
    are the requests' own failures, never a reason to stop; nor do one dialogue's refusals count three times."""
    filtered = ('{"error": {"code": "content_filter", "message": "The response was filtered due to the prompt '
                'triggering Azure OpenAI\'s content management policy."}}')
    plain_400 = '{"error": {"message": "Invalid value for temperature"}}'
    server = serve([status(400, filtered)] * 6 + [status(400, plain_400)] * 2)
    requests = [ChatRequest.chat([{"role": "user", "content": f"m{i}"}], sampling=Sampling(max_tokens=16),
                                 group=f"d{i // 4}") for i in range(12)]
    results, stats = run(server, requests, cache)  # one stream: d0's four, d1's four, then d2's
    assert [r.error_kind for r in results] == ["client_error"] * 8 + [None] * 4
    expect(stats, failures={"client_error": 8})


def test_a_gateway_authorization_header_wins_over_the_environment_key(serve, cache, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    server = serve([echo_auth(500, '{{"error": "upstream said no to gw-token-77"}}')])
    engine = make_engine(server, headers={"authorization": "Bearer gw-token-77"})
    [result], _ = run(server, [req()], cache, engine=engine)
    assert result.ok and {p["auth"] for p in server.posts} == {"Bearer gw-token-77"}  # the key is not sent there
    assert cache.counts() == {"answers": 1, "failures": 0}
    stored = b"".join(p.read_bytes() for p in cache.path.parent.iterdir())
    assert b"gw-token-77" not in stored


def test_a_token_echoed_without_its_scheme_word_is_masked(serve, cache):
    server = serve([], default=echo_auth(400, '{{"error": "unknown token {auth}"}}'))
    engine = make_engine(server, headers={"X-Api-Token": "Token tok-5150-abc"})
    results, _ = run(server, [req("one")], cache, engine=engine)

    def masked(text: str) -> bool:
        return "tok-5150-abc" not in text

    assert results[0].error_kind == "client_error" and masked(results[0].error)
    server2 = serve([], default=lambda h: h.reply(400, '{"error": "bad token tok-5150-abc"}'))
    [again], _ = run(server2, [req("two")], cache, engine=make_engine(server2, headers={"X-Api-Token":
                                                                                        "Token tok-5150-abc"}))
    assert "***" in again.error and masked(again.error)


def test_idle_time_is_not_time_without_an_answer():
    from ipm_prefdial.engines.breaker import Breaker

    breaker = Breaker("http://x/v1", after=0.3)
    breaker.begin()
    breaker.failed("server_error", "HTTP 503")  # 1 failure, 0.3 s to go
    breaker.end()
    time.sleep(0.4)  # idle: another host's engine works meanwhile
    breaker.begin()
    assert breaker.remaining() > 0.2
    breaker.failed("server_error", "HTTP 503")  # still within the time it was busy
    time.sleep(0.35)
    with pytest.raises(EngineStop, match="no answer for 0.3 s: the last of 3 failed attempts"):
        breaker.failed("server_error", "HTTP 503")


def test_requests_go_through_the_proxy_the_environment_names(serve, cache, monkeypatch):
    """HTTP_PROXY / NO_PROXY are read once per session (aiohttp's trust_env read them, and ~/.netrc, in threads for
    every request): a request to an endpoint behind the proxy reaches the proxy in absolute form."""
    from urllib.parse import urlsplit

    from ipm_prefdial.engines.urls import env_proxy

    proxy = serve()
    seen: list[str] = []

    class AbsoluteForm(proxy.httpd.RequestHandlerClass):
        def parse_request(self):
            ok = super().parse_request()
            seen.append(self.path)
            self.path = urlsplit(self.path).path  # answer as the endpoint would
            return ok

    proxy.httpd.RequestHandlerClass = AbsoluteForm
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert env_proxy("http://api.invalid:8000/v1") == proxy.url
    assert env_proxy("https://api.invalid/v1") is None  # no HTTPS_PROXY
    engine = OpenAIEngine("http://api.invalid:8000/v1", "fake", concurrency=1, timeout=TIMEOUT, max_attempts=1)
    [result], _ = run(proxy, [req()], cache, engine=engine)
    assert result.ok and result.text == "Fine, thanks."
    assert seen == ["http://api.invalid:8000/v1/models", "http://api.invalid:8000/v1/chat/completions"]
    monkeypatch.setenv("NO_PROXY", "api.invalid,localhost")
    assert env_proxy("http://api.invalid:8000/v1") is None

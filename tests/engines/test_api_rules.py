"""The requests of a build as real APIs take them: scripted servers that enforce what OpenAI, Azure OpenAI and an
API gateway enforce, and refuse what they refuse, with their own error bodies.

- OpenAI: ``Authorization: Bearer``; no request field it does not know (``grammar``, ``structured_outputs``); a
  model that only takes ``max_completion_tokens`` refuses ``max_tokens``; a strict JSON schema must close every
  object (``additionalProperties: false``), require every property and use no keyword strict mode lacks
  (``maxLength``, ``minLength``); unknown models are 404.
- Azure OpenAI: ``/openai/deployments/<name>/chat/completions?api-version=...`` (no version, another path: 404
  "Resource not found"); the key in an ``api-key`` header (a Bearer API key: 401); no ``/models`` under a deployment.
- A gateway: a header of its own on every request, else 401.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import fake_build_args, plain
from helpers.engines import AZURE_KEY, GATEWAY_KEY, OPENAI_KEY, REASONING_MODEL, strict_schema_problem
from ipm_prefdial.cli import app
from ipm_prefdial.engines.cache import RequestCache

runner = CliRunner()
def build(tmp_path: Path, url: str, *extra: str):
    return runner.invoke(app, [*fake_build_args(url, "--trim-tokenizer", "none", "--limit", "1", *extra),
                               "--out", str(tmp_path / "ds"), "--cache-dir", str(tmp_path / "cache")])


def everything_written(tmp_path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file())


def test_the_strict_schema_rules_of_the_scripted_server_refuse_what_openai_refuses():
    closed = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
              "additionalProperties": False}
    assert strict_schema_problem(closed) is None
    assert strict_schema_problem({**closed, "additionalProperties": True}) == (
        "In context=(), 'additionalProperties' is required to be supplied and to be false.")
    assert strict_schema_problem({**closed, "required": []}).startswith("In context=(), 'required' is required")
    assert strict_schema_problem({**closed, "properties": {"a": {"type": "string", "maxLength": 9}}}) == (
        "In context=('properties', 'a'), 'maxLength' is not permitted.")


def test_openai_takes_every_request_of_a_build(api, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    server = api("openai")
    result = build(tmp_path, server.root + "/v1", "--model", "gpt-test")
    assert result.exit_code == 0, result.output
    assert server.refusals == [] and len(server.requests) > 100
    formats = {json.dumps(r["body"]["response_format"]["json_schema"]["name"]) for r in server.requests
               if "response_format" in r["body"]}
    assert formats == {'"choice"', '"verdict"'}  # SP choices and judge verdicts as strict JSON schemas
    assert all(r["body"]["max_tokens"] for r in server.requests)
    assert OPENAI_KEY not in result.output and OPENAI_KEY.encode() not in everything_written(tmp_path)


def test_a_model_that_refuses_max_tokens_gets_max_completion_tokens(api, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    server = api("openai")
    result = build(tmp_path, server.root + "/v1", "--model", REASONING_MODEL, "--no-judge")
    assert result.exit_code == 0, result.output
    # the requests in flight when the API first said so were refused once each, and asked again renamed
    old_style = [r for r in server.requests if "max_tokens" in r["body"]]
    assert 1 <= len(old_style) <= 8 and len(server.refusals) == len(old_style)
    assert {status for status, _ in server.refusals} == {400}
    assert all("Use 'max_completion_tokens' instead." in text for _, text in server.refusals)
    renamed = [r for r in server.requests if "max_completion_tokens" in r["body"]]
    assert len(renamed) == len(server.requests) - len(old_style)
    assert {r["body"]["max_completion_tokens"] for r in renamed} == {32, 160, 192}  # the bounds, renamed
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["models"]["sp"]["token_param"] == "max_completion_tokens"
    assert sum(t["accounting"]["failures"].get("client_error", 0) for t in manifest["mining"].values()) == 0


def test_a_wrong_key_or_model_stops_at_once_and_records_nothing(api, tmp_path, monkeypatch):
    server = api("openai")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    result = build(tmp_path, server.root + "/v1", "--model", "gpt-test")
    assert result.exit_code == 1 and server.requests == []
    assert plain(result.output).startswith(f"error: {server.root}/v1: HTTP 401: GET /models: Incorrect API key "
                                           "provided.; check the API key")
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    result = build(tmp_path, server.root + "/v1", "--model", "gpt-5-typo")
    assert result.exit_code == 1
    assert "HTTP 404: POST /chat/completions: The model `gpt-5-typo` does not exist" in plain(result.output)
    with RequestCache.in_dir(tmp_path / "cache") as cache:
        assert cache.counts() == {"answers": 0, "failures": 0}
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("path", ["/openai/deployments/gpt4o?api-version=2024-10-21",
                                  "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
                                  "/openai/deployments/gpt4o"],
                         ids=["deployment URL", "target URI", "no api-version"])
def test_azure_openai_takes_every_request_of_a_build(api, tmp_path, monkeypatch, path):
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", AZURE_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", "not-for-azure")
    server = api("azure")
    result = build(tmp_path, server.root + path, "--no-judge")
    assert result.exit_code == 0, result.output
    assert server.refusals == [] and len(server.requests) > 50
    assert {r["path"] for r in server.requests} == {"/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21"}
    assert all(r["headers"].get("api-key") == AZURE_KEY and "Authorization" not in r["headers"]
               for r in server.requests)
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["models"]["rg"]["model"] == "gpt4o"  # the deployment names the model
    assert manifest["models"]["rg"]["base_url"] == f"{server.root}/openai/deployments/gpt4o?api-version=2024-10-21"
    assert AZURE_KEY.encode() not in everything_written(tmp_path)


def test_a_gateway_header_is_sent_with_every_request_and_written_nowhere(api, tmp_path):
    server = api("gateway")
    refused = build(tmp_path, server.root + "/v1", "--model", "gpt-test")
    assert refused.exit_code == 1 and "HTTP 401: GET /models: missing or wrong X-Gateway-Key" in plain(
        refused.output)
    result = build(tmp_path, server.root + "/v1", "--model", "gpt-test", "--header", f"X-Gateway-Key={GATEWAY_KEY}",
                   "--header", "X-Team=esc")
    assert result.exit_code == 0, result.output
    assert server.refusals == []  # the refused run stopped at GET /models: no request was sent without the key
    assert server.requests and all(r["headers"]["X-Gateway-Key"] == GATEWAY_KEY and r["headers"]["X-Team"] == "esc"
                                   for r in server.requests)
    assert GATEWAY_KEY not in result.output + refused.output
    assert GATEWAY_KEY.encode() not in everything_written(tmp_path)  # parquet, card, manifest, cache
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["build_config"]["headers"] == ["X-Gateway-Key", "X-Team"]
    assert manifest["models"]["judge"]["headers"] == ["X-Gateway-Key", "X-Team"]

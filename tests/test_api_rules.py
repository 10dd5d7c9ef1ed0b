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
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from fake_llm import answer
from typer.testing import CliRunner

from conftest import fake_build_args, plain
from ipm_prefdial.cli import app
from ipm_prefdial.engines import RequestCache

runner = CliRunner()
OPENAI_KEY, AZURE_KEY, GATEWAY_KEY = "sk-openai-test-4f1c", "azure-key-77e0", "gw-secret-91aa"
# the request fields of OpenAI's chat completions that a build may send
OPENAI_FIELDS = {"model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "seed",
                 "response_format", "n", "stop", "stream", "user", "logprobs", "presence_penalty", "frequency_penalty"}
REASONING_MODEL = "o-reasoner"  # takes max_completion_tokens only, as OpenAI's reasoning models do
STRICT_UNSUPPORTED = ("minLength", "maxLength", "minProperties", "maxProperties")


def strict_schema_problem(node, context: tuple = ()) -> str | None:
    """What OpenAI's strict mode refuses in a schema, in its own words, or None."""
    if isinstance(node, dict):
        for keyword in STRICT_UNSUPPORTED:
            if keyword in node:
                return f"In context={context}, '{keyword}' is not permitted."
        if node.get("type") == "object":
            if node.get("additionalProperties") is not False:
                return f"In context={context}, 'additionalProperties' is required to be supplied and to be false."
            if sorted(node.get("required", [])) != sorted(node.get("properties", {})):
                return (f"In context={context}, 'required' is required to be supplied and to be an array including "
                        "every key in properties.")
        for key, value in node.items():
            problem = strict_schema_problem(value, (*context, key))
            if problem:
                return problem
    elif isinstance(node, list):
        for value in node:
            problem = strict_schema_problem(value, context)
            if problem:
                return problem
    return None


class StrictAPI:
    """One of ``openai``, ``azure``, ``gateway`` on 127.0.0.1; records every request (path, headers, body)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.requests: list[dict] = []
        self.refusals: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                if status >= 400 and self.command == "POST":
                    with api._lock:
                        api.refusals.append((status, json.dumps(payload)))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                refused = api.refuse(self, None)
                if refused:
                    self.send(*refused)
                elif api.kind == "azure" or urlsplit(self.path).path != "/v1/models":
                    self.send(404, {"error": {"code": "404", "message": "Resource not found"}})
                else:
                    self.send(200, {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "system"}
                                                               for m in ("gpt-test", REASONING_MODEL)]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                with api._lock:
                    api.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                refused = api.refuse(self, body)
                if refused:
                    self.send(*refused)
                    return
                bound = body.get("max_completion_tokens", body.get("max_tokens"))
                text, finish, prompt_tokens, completion_tokens = answer({**body, "max_tokens": bound})
                self.send(200, {"id": "chatcmpl-1", "object": "chat.completion", "model": body.get("model", "x"),
                                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                             "finish_reason": finish}],
                                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                          "total_tokens": prompt_tokens + completion_tokens}})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.root = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def refuse(self, handler: BaseHTTPRequestHandler, body: dict | None) -> tuple[int, dict] | None:
        """(status, error body) of a request this API refuses, or None."""
        headers, parts = handler.headers, urlsplit(handler.path)
        if self.kind == "azure":
            match = re.fullmatch(r"/openai/deployments/([\w.-]+)/(chat/completions|models)", parts.path)
            if not match or parse_qs(parts.query).get("api-version") != ["2024-10-21"]:
                return 404, {"error": {"code": "404", "message": "Resource not found"}}
            if headers.get("api-key") != AZURE_KEY:
                return 401, {"error": {"code": "401", "message": "Access denied due to invalid subscription key or "
                                                                 "wrong API endpoint."}}
        else:
            if self.kind == "gateway" and headers.get("X-Gateway-Key") != GATEWAY_KEY:
                return 401, {"error": {"message": "missing or wrong X-Gateway-Key"}}
            if self.kind == "openai" and headers.get("Authorization") != f"Bearer {OPENAI_KEY}":
                return 401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                       "code": "invalid_api_key"}}
            if body is not None and parts.path != "/v1/chat/completions":
                return 404, {"error": {"message": "Not found"}}
        if body is None or self.kind == "gateway":
            return None
        unknown = sorted(set(body) - OPENAI_FIELDS)
        if unknown:
            return 400, {"error": {"message": f"Unrecognized request argument supplied: {unknown[0]}",
                                   "type": "invalid_request_error", "param": None, "code": None}}
        if self.kind == "openai" and body.get("model") not in ("gpt-test", REASONING_MODEL):
            return 404, {"error": {"message": f"The model `{body.get('model')}` does not exist or you do not have "
                                              "access to it.", "type": "invalid_request_error",
                                   "code": "model_not_found"}}
        if body.get("model") == REASONING_MODEL and "max_tokens" in body:
            return 400, {"error": {"message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
                                              "Use 'max_completion_tokens' instead.",
                                   "type": "invalid_request_error", "param": "max_tokens",
                                   "code": "unsupported_parameter"}}
        fmt = (body.get("response_format") or {}).get("json_schema")
        if fmt is not None:
            if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", fmt.get("name", "")):
                return 400, {"error": {"message": "Invalid 'response_format.json_schema.name'"}}
            problem = strict_schema_problem(fmt["schema"]) if fmt.get("strict") else None
            if problem:
                return 400, {"error": {"message": f"Invalid schema for response_format '{fmt['name']}': {problem}",
                                       "type": "invalid_request_error", "param": "response_format", "code": None}}
        return None

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def api():
    servers: list[StrictAPI] = []

    def start(kind: str) -> StrictAPI:
        servers.append(StrictAPI(kind))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


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

"""Helpers of the engine tests (tests/engines/): the scripted servers and proxies they run on 127.0.0.1.

- ``StrictAPI`` (test_api_rules.py): OpenAI, Azure OpenAI or an API gateway, enforcing what each enforces.
- ``FakeServer`` (test_engine_faults.py): serves scripted behaviours (429, 500, hangs, malformed bodies, ...) in order.
- ``CountingProxy`` (test_engine_resume.py): a reverse proxy in front of the embedded engine that records each POST.
- ``BOUNDS`` (test_vllm.py): the answer bounds of the vLLM builds.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from ipm_prefdial.testing import fake_llm

# -- the real APIs' rules (test_api_rules.py) --------------------------------------------------------------
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
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout under test): nothing to report
                    self.close_connection = True

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
                text, finish, prompt_tokens, completion_tokens = fake_llm.answer({**body, "max_tokens": bound})
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


# -- the scripted server (test_engine_faults.py) -----------------------------------------------------------
USAGE = {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}


class FakeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK wait between them
    timeout = 5  # an idle keep-alive connection does not hold a handler thread forever
    fake: FakeServer  # set on the per-server subclass

    def log_message(self, *args):  # keep the test output clean
        pass

    def reply(self, status: int, body: bytes | str | dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else body.encode() if isinstance(body, str) \
            else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.fake.gets.append(self.path)
        if self.fake.models is not None:
            self.fake.models(self)
        elif self.path.rstrip("/") == "/v1/models":
            self.reply(200, {"data": [{"id": "fake", "owned_by": "test"}]})
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != "/v1/chat/completions":
            self.reply(404, {"error": "not found"})
            return
        behaviour = self.fake.record(self, body)
        try:
            behaviour(self)
        except OSError:  # the client gave up on this connection (after a timeout): nothing to answer
            self.close_connection = True


Behaviour = Callable[[FakeHandler], None]


class FakeServer:
    """Serves the scripted behaviours in order, then ``default``; records every chat request it receives."""

    def __init__(self, script: list[Behaviour], default: Behaviour | None = None, models: Behaviour | None = None):
        self.script = list(script)
        self.default = default or answer()
        self.models = models  # what GET /v1/models does (default: lists the model "fake")
        self.posts: list[dict] = []  # {"t", "body", "auth"} per POST /v1/chat/completions
        self.gets: list[str] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        handler = type("Handler", (FakeHandler,), {"fake": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.block_on_close = False  # never wait on a hung or idle handler at shutdown
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def record(self, handler: FakeHandler, body: bytes) -> Behaviour:
        with self._lock:
            self.posts.append({"t": time.monotonic(), "body": json.loads(body),
                               "auth": handler.headers.get("Authorization")})
            return self.script.pop(0) if self.script else self.default

    @property
    def count(self) -> int:
        return len(self.posts)

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def completion(text: str | None, finish: str = "stop", usage: dict | None = None) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": USAGE if usage is None else usage}


def answer(text: str = "Fine, thanks.", finish: str = "stop") -> Behaviour:
    return lambda h: h.reply(200, completion(text, finish))


# -- the counting proxy (test_engine_resume.py) ------------------------------------------------------------
PROXY_DELAY = 0.05  # per forwarded request: keeps the child from finishing before the poll sees 5 answers


class CountingProxy:
    """Forwards every request to ``target`` (the engine's http://host:port) and records each POST body."""

    def __init__(self, target: str):
        parts = urlsplit(target)
        host, port = parts.hostname, parts.port
        self.bodies: list[dict] = []
        lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 60
            disable_nagle_algorithm = True  # headers and body are two writes: no delayed-ACK wait between them

            def log_message(self, *args):
                pass

            def forward(self, method: str, body: bytes | None) -> None:
                upstream = http.client.HTTPConnection(host, port, timeout=600)
                try:
                    upstream.request(method, self.path, body=body, headers={"Content-Type": "application/json"})
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                try:
                    self.send_response(response.status)
                    self.send_header("Content-Type", response.getheader("Content-Type") or "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client is gone (killed mid-request)
                    self.close_connection = True

            def do_GET(self):
                self.forward("GET", None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    proxy.bodies.append(json.loads(body))
                time.sleep(PROXY_DELAY)
                self.forward("POST", body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def messages(self, start: int = 0) -> list[str]:
        return [body["messages"][-1]["content"] for body in self.bodies[start:]]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


# -- vLLM (test_vllm.py) -----------------------------------------------------------------------------------
LONG_TURN_WORDS = 2100  # more than 2,048 tokens in any tokenizer (a word is at least one token)
BOUNDS = ["--sp-max-tokens", "8", "--rg-max-tokens", "24", "--vm-max-tokens", "32", "--judge-max-tokens", "160"]

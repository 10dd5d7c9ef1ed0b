"""The batch API of the package's test server (``fake_llm.FakeLLM``), written from OpenAI's and Azure OpenAI's
documentation of ``/v1/files`` and ``/v1/batches``:

- ``POST files`` (multipart: ``purpose=batch``, ``file``) -> a File object; ``GET files/{id}/content`` -> its bytes;
- ``POST batches`` (``input_file_id``, ``endpoint``, ``completion_window: "24h"``, ``metadata``) -> a Batch object,
  ``validating``; ``GET batches/{id}``; ``GET batches?after=&limit=`` (``has_more``, ``last_id``);
  ``POST batches/{id}/cancel`` -> ``cancelling``, then ``cancelled``;
- the lifecycle ``validating -> in_progress -> finalizing -> completed | expired | cancelled | failed``, one step
  each time the batch is retrieved (deterministic for tests; a real provider takes minutes to hours);
- validation as documented: at most ``max_lines`` lines (OpenAI 50,000; Azure 100,000: ``too_many_tasks``) and
  ``max_bytes`` bytes a file, JSON lines with a unique ``custom_id``, ``method`` POST, the batch's ``url``, one model;
  a failed batch says why in ``errors.data`` (``code``, ``message``, ``line``); ``fail_codes`` makes the next batches
  fail with those codes (``token_limit_exceeded``: the enqueued-token quota);
- the output file holds the answered lines, the error file the others, both in an order that is not the input's
  (shuffled); ``expire_percent`` of the lines (chosen by ``custom_id``, the first time only) are not run before the
  window ends: the batch is ``expired`` and those lines are in the error file with ``batch_expired``, as OpenAI
  writes them;
- Azure's forms: ``/openai/v1/...`` and ``/openai/files?api-version=...`` with the ``api-key`` header, the endpoint
  ``/chat/completions``, the deployment as model, and an empty error file for a batch without errors.

``submitted`` counts every line ever submitted by ``custom_id`` (a test checks that none went out twice).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

TERMINAL = ("completed", "expired", "cancelled", "failed")


class Batches:
    def __init__(self, answer_line, max_lines: int = 50_000, max_bytes: int = 200_000_000):
        """``answer_line(body) -> (status_code, response body)``: how one chat request of a batch is answered."""
        self.answer_line = answer_line
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.expire_percent = 0.0
        self.fail_codes: list[str] = []
        self.refuse_uploads: str | None = None  # an error message: every upload is answered 400 with it
        self.lose_creates = 0  # this many batches are made but their answer is lost (HTTP 502, as a gateway's)
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.order: list[str] = []
        self.submitted: Counter = Counter()  # custom_id -> lines holding it in batches that passed validation
        self.expired_once: set[str] = set()
        self.retrieves = 0

    # -- HTTP --------------------------------------------------------------------------------------------------
    def handles(self, path: str) -> bool:
        parts = urlsplit(path).path.rstrip("/").split("/")
        return "files" in parts or "batches" in parts

    def route(self, method: str, path: str, headers, raw: bytes) -> tuple[int, dict | bytes]:
        url = urlsplit(path)
        parts = url.path.rstrip("/").split("/")
        azure = parts[1:2] == ["openai"]
        if azure and (headers.get("api-key") is None or (parts[2:3] != ["v1"]
                                                        and "api-version" not in parse_qs(url.query))):
            return 401, {"error": {"code": "401", "message": "Access denied: missing api-key or api-version."}}
        if "files" in parts:
            rest = parts[parts.index("files") + 1:]
            if method == "POST" and not rest:
                return self.upload(headers.get("Content-Type", ""), raw)
            if method == "GET" and len(rest) == 2 and rest[1] == "content" and rest[0] in self.files:
                return 200, self.files[rest[0]]
            return 404, {"error": {"message": "No such file", "code": "not_found"}}
        rest = parts[parts.index("batches") + 1:]
        if method == "POST" and not rest:
            return self.create(json.loads(raw or b"{}"), azure)
        if method == "GET" and not rest:
            query = parse_qs(url.query)
            return 200, self.listing(query.get("after", [None])[0], int(query.get("limit", ["20"])[0]))
        if rest and rest[0] in self.batches:
            if method == "GET" and len(rest) == 1:
                return 200, self.retrieve(rest[0])
            if method == "POST" and rest[1:] == ["cancel"]:
                return 200, self.cancel(rest[0])
        return 404, {"error": {"message": "No such batch", "code": "not_found"}}

    def upload(self, content_type: str, raw: bytes) -> tuple[int, dict]:
        if self.refuse_uploads:
            return 400, {"error": {"message": self.refuse_uploads, "code": "invalid_request"}}
        fields = _multipart(content_type, raw)
        if fields.get("purpose") != b"batch" or "file" not in fields:
            return 400, {"error": {"message": "expected purpose=batch and a file", "code": "invalid_request"}}
        file_id = f"file-{len(self.files) + 1:06d}"
        self.files[file_id] = fields["file"]
        return 200, {"id": file_id, "object": "file", "bytes": len(fields["file"]), "created_at": int(time.time()),
                     "filename": "batch.jsonl", "purpose": "batch", "status": "processed"}

    def create(self, body: dict, azure: bool) -> tuple[int, dict]:
        file_id = body.get("input_file_id")
        if file_id not in self.files:
            return 400, {"error": {"message": f"Cannot find file {file_id}", "code": "invalid_request"}}
        endpoint = "/chat/completions" if azure else "/v1/chat/completions"
        if body.get("endpoint") != endpoint or body.get("completion_window") != "24h":
            return 400, {"error": {"message": f"endpoint must be {endpoint} and completion_window 24h",
                                   "code": "invalid_request"}}
        batch_id = f"batch_{len(self.batches) + 1:06d}"
        self.batches[batch_id] = {
            "id": batch_id, "object": "batch", "endpoint": endpoint, "input_file_id": file_id,
            "completion_window": "24h", "status": "validating", "output_file_id": None, "error_file_id": None,
            "errors": None, "created_at": int(time.time()), "request_counts": {"total": 0, "completed": 0,
                                                                             "failed": 0},
            "metadata": body.get("metadata"), "_azure": azure, "_cancel": False}
        self.order.append(batch_id)
        if self.lose_creates:
            self.lose_creates -= 1
            return 502, {"error": {"message": "Bad gateway", "code": "bad_gateway"}}
        return 200, self.public(batch_id)

    def public(self, batch_id: str) -> dict:
        return {k: v for k, v in self.batches[batch_id].items() if not k.startswith("_")}

    def listing(self, after: str | None, limit: int) -> dict:
        ids = list(reversed(self.order))  # newest first, as the API lists them
        start = ids.index(after) + 1 if after in ids else 0
        page = ids[start: start + max(1, min(limit, 100))]
        return {"object": "list", "data": [self.public(i) for i in page], "first_id": page[0] if page else None,
                "last_id": page[-1] if page else None, "has_more": start + len(page) < len(ids)}

    def cancel(self, batch_id: str) -> dict:
        batch = self.batches[batch_id]
        if batch["status"] not in TERMINAL:
            batch["status"], batch["_cancel"] = "cancelling", True
        return self.public(batch_id)

    # -- the lifecycle -------------------------------------------------------------------------------------------
    def retrieve(self, batch_id: str) -> dict:
        self.retrieves += 1
        batch = self.batches[batch_id]
        status = batch["status"]
        if status == "validating":
            self.validate(batch)
        elif status == "in_progress":
            batch["status"] = "finalizing"
        elif status == "finalizing":
            self.run(batch)
        elif status == "cancelling":
            self.run(batch, cancelled=True)
        return self.public(batch_id)

    def validate(self, batch: dict) -> None:
        raw = self.files[batch["input_file_id"]]
        lines = [line for line in raw.split(b"\n") if line.strip()]
        error = None
        if self.fail_codes:
            error = {"code": self.fail_codes.pop(0), "message": "Enqueued token limit reached for this model. "
                     "Please try again once some in_progress batches have been completed.", "line": None}
        elif not lines:
            error = {"code": "empty_file", "message": "The input file is empty.", "line": None}
        elif len(lines) > self.max_lines:
            error = {"code": "too_many_tasks", "message": f"The input file has {len(lines)} requests; at most "
                     f"{self.max_lines} are allowed.", "line": None}
        elif len(raw) > self.max_bytes:
            error = {"code": "file_too_large", "message": "File is too large.", "line": None}
        else:
            seen, models = set(), set()
            for n, line in enumerate(lines, 1):
                try:
                    item = json.loads(line)
                    ok = (item["method"] == "POST" and item["url"] in ("/v1/chat/completions", "/chat/completions")
                          and item["custom_id"] not in seen and isinstance(item["body"], dict))
                    seen.add(item["custom_id"])
                    models.add(item["body"].get("model"))
                except (ValueError, KeyError, TypeError):
                    ok = False
                if not ok:
                    error = {"code": "invalid_json_line", "message": f"line {n} is not a valid request line",
                             "line": n}
                    break
            if error is None and len(models) > 1:
                error = {"code": "model_mismatch", "message": "every line must use the same model", "line": None}
        if error is not None:
            batch.update(status="failed", errors={"object": "list", "data": [error]}, failed_at=int(time.time()))
            return
        batch["_lines"] = [json.loads(line) for line in lines]
        batch["request_counts"] = {"total": len(lines), "completed": 0, "failed": 0}
        self.submitted.update(item["custom_id"] for item in batch["_lines"])
        batch["status"] = "in_progress"

    def expires(self, custom_id: str) -> bool:
        if not self.expire_percent or custom_id in self.expired_once:
            return False
        digest = hashlib.sha256(custom_id.encode()).digest()
        if int.from_bytes(digest[:4], "big") % 10_000 < self.expire_percent * 100:
            self.expired_once.add(custom_id)
            return True
        return False

    def run(self, batch: dict, cancelled: bool = False) -> None:
        """Answer the batch's lines (none when it is cancelled before running) and write its two files."""
        output, errors = [], []
        expired = False
        for n, item in enumerate(batch.get("_lines", [])):
            line_id = f"batch_req_{batch['id'][6:]}_{n:06d}"
            if cancelled:
                errors.append({"id": line_id, "custom_id": item["custom_id"], "response": None,
                               "error": {"code": "batch_cancelled",
                                         "message": "This request was cancelled before it ran."}})
                continue
            if self.expires(item["custom_id"]):
                expired = True
                errors.append({"id": line_id, "custom_id": item["custom_id"], "response": None,
                               "error": {"code": "batch_expired", "message": "This request could not be executed "
                                                                             "before the completion window expired."}})
                continue
            status, body = self.answer_line(item["body"])
            line = {"id": line_id, "custom_id": item["custom_id"],
                    "response": {"status_code": status, "request_id": f"req_{n:06d}", "body": body}, "error": None}
            (output if status == 200 else errors).append(line)
        rng = random.Random(batch["id"])
        rng.shuffle(output)
        rng.shuffle(errors)
        batch["request_counts"] = {"total": len(batch.get("_lines", [])), "completed": len(output),
                                   "failed": len(errors)}
        if output:
            batch["output_file_id"] = self._keep(output)
        if errors or batch["_azure"]:  # Azure names an (empty) error file even when nothing failed
            batch["error_file_id"] = self._keep(errors)
        now = int(time.time())
        if cancelled:
            batch.update(status="cancelled", cancelled_at=now)
        elif expired:
            batch.update(status="expired", expired_at=now)
        else:
            batch.update(status="completed", completed_at=now)

    def _keep(self, lines: list[dict]) -> str:
        file_id = f"file-{len(self.files) + 1:06d}"
        self.files[file_id] = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        return file_id


def _multipart(content_type: str, raw: bytes) -> dict[str, bytes]:
    """The fields of a multipart/form-data body (name -> bytes)."""
    boundary = next((p.split("=", 1)[1].strip('"') for p in content_type.split(";") if "boundary=" in p), None)
    if not boundary:
        return {}
    fields: dict[str, bytes] = {}
    for part in raw.split(b"--" + boundary.encode()):
        head, sep, body = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        for token in head.decode("utf-8", "replace").split(";"):
            token = token.strip()
            if token.startswith("name="):
                fields[token[5:].strip('"')] = body[:-2] if body.endswith(b"\r\n") else body
                break
    return fields

"""The book of batches in the request cache's database (tables ``batch_parts`` and ``batch_lines``): a part is one
batch input file (or one exported file) and the provider's batch made of it; its lines are the requests in it, by
cache key, with what checking their answers needs (the output constraint and max tokens). And the lines of batch
output files: ``read_line`` (one line's result, or why it must be sent again) and ``import_outputs`` (``ipm batches
import``)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ipm_prefdial.engines.cache import CHUNK, RequestCache
from ipm_prefdial.engines.openai_http import completion_result
from ipm_prefdial.engines.requests import ChatRequest, ChatResult, Choice, JsonSchema, Sampling, failure
from ipm_prefdial.errors import InputError

LIVE = ("new", "uploaded", "validating", "in_progress", "finalizing", "cancelling")
TERMINAL = ("completed", "expired", "cancelled", "failed")
EXPORTED = "exported"
RESUBMIT = ("batch_expired", "batch_cancelled", "request_timeout")  # line error codes: sent again in a new batch


def output_spec(request: ChatRequest) -> str | None:
    return json.dumps(request.output.spec(), sort_keys=True) if request.output else None


def request_of(spec: str | None, max_tokens: int) -> ChatRequest:
    """A stand-in for a request known only by its line of the book: what checking its answer needs."""
    output = None
    if spec:
        data = json.loads(spec)
        output = Choice(tuple(data["labels"])) if data["type"] == "choice" else JsonSchema.of(
            data["schema"], data.get("name", "answer"), data.get("string_chars"))
    return ChatRequest((), Sampling(max_tokens=max_tokens), output)


class Book:
    """The batch parts of one endpoint in the cache's database."""

    def __init__(self, cache: RequestCache, endpoint: str):
        self.cache, self.endpoint = cache, endpoint

    def add(self, role: str, identity: str, structured: str, lines: list[tuple[str, str | None, int]],
            worst: float, status: str = "new") -> int:
        now = time.time()
        self.cache.sql("INSERT INTO batch_parts (endpoint, role, identity, structured, status, lines, worst_usd, "
                       "created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (self.endpoint, role, identity, structured, status, len(lines), worst, now, now))
        part = self.cache.sql("SELECT last_insert_rowid()")[0][0]
        self.cache.sql_many("INSERT OR REPLACE INTO batch_lines VALUES (?, ?, ?, ?)",
                            [(key, part, spec, max_tokens) for key, spec, max_tokens in lines])
        return part

    def update(self, part: int, **values) -> None:
        values["updated"] = time.time()
        names = ", ".join(f"{name} = ?" for name in values)
        self.cache.sql(f"UPDATE batch_parts SET {names} WHERE part = ?", (*values.values(), part))

    def open_parts(self, keys: Sequence[str]) -> list[dict]:
        """The live parts holding any of ``keys``, oldest first."""
        found: set[int] = set()
        for i in range(0, len(keys), CHUNK):
            chunk = keys[i: i + CHUNK]
            found.update(row[0] for row in self.cache.sql(
                f"SELECT DISTINCT part FROM batch_lines WHERE key IN ({','.join('?' * len(chunk))})", chunk))
        # by key, not by endpoint: a request is a content address, and one in a live batch anywhere (the same
        # provider named another way, another --api-version) must not be sent again
        return [p for p in parts(self.cache) if p["part"] in found and p["status"] in LIVE]

    def lines(self, part: int) -> dict[str, tuple[str | None, int]]:
        return {key: (spec, max_tokens) for key, spec, max_tokens in self.cache.sql(
            "SELECT key, output, max_tokens FROM batch_lines WHERE part = ?", (part,))}

    def drop(self, part: int) -> None:
        self.cache.sql("DELETE FROM batch_lines WHERE part = ?", (part,))
        self.cache.sql("DELETE FROM batch_parts WHERE part = ?", (part,))


PART_COLUMNS = ("part", "endpoint", "role", "identity", "structured", "file_id", "batch_id", "status", "lines",
                "worst_usd", "counts", "created", "updated")


def parts(cache: RequestCache, endpoint: str | None = None) -> list[dict]:
    """Every recorded part (of one endpoint), oldest first."""
    where, params = ("WHERE endpoint = ?", (endpoint,)) if endpoint else ("", ())
    rows = cache.sql(f"SELECT {', '.join(PART_COLUMNS)} FROM batch_parts {where} ORDER BY part", params)
    return [dict(zip(PART_COLUMNS, row, strict=True)) for row in rows]


# ------------------------------------------------------------------------------------------------ output lines
def read_line(item: dict, request: ChatRequest, structured: str, batch_id: str) -> ChatResult | str:
    """A line of a batch output or error file: its result, or why it must be sent again (a string). OpenAI's form
    (``response: {status_code, request_id, body}``, ``error: {code, message}``), ``vllm run-batch``'s (the same, its
    error a string) and old vLLM's (``response`` the completion itself)."""
    error = item.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    response = item.get("response")
    if isinstance(response, dict) and "choices" in response:  # old vLLM: the body itself
        response = {"status_code": 200, "body": response}
    if not isinstance(response, dict) or code in RESUBMIT:
        return str(code or "no response")
    status = int(response.get("status_code") or 0)
    body = response.get("body")
    if status == 200 and isinstance(body, dict):
        result = completion_result(request, body, structured)
        if result is None:
            return "malformed_response"
        result.extra = {"batch": batch_id}
        return result
    if status == 429 or status >= 500 or status == 0:
        return f"HTTP {status}"
    words = error if isinstance(error, str) else json.dumps(body if body is not None else error)[:300]
    return failure("client_error", f"HTTP {status} in batch {batch_id}: {words}", extra={"batch": batch_id})


def import_outputs(cache: RequestCache, paths: Sequence[Path]) -> Counter:
    """Read batch output files (OpenAI's, ``vllm run-batch``'s) into the cache: each line whose ``custom_id`` the
    book knows (a request written by ``--batch-export`` or sent in a batch) becomes that request's answer or
    failure. Counts: answers, failures, resend (no answer in the line: a rerun exports it again), unknown (not in
    the book), known (already answered)."""
    counts: Counter = Counter()
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            for number, text in enumerate(handle, 1):
                if not text.strip():
                    continue
                try:
                    item = json.loads(text)
                    key = item["custom_id"]
                except (ValueError, KeyError, TypeError):
                    raise InputError(f"{path}: line {number}: not a batch output line (JSON with a custom_id)"
                                     ) from None
                row = cache.sql("SELECT l.output, l.max_tokens, p.structured, p.identity, p.batch_id FROM "
                                "batch_lines l JOIN batch_parts p ON p.part = l.part WHERE l.key = ? "
                                "ORDER BY l.part DESC LIMIT 1", (str(key),))
                if not row:
                    counts["unknown"] += 1
                    continue
                if cache.answers([key]):
                    counts["known"] += 1
                    continue
                spec, max_tokens, structured, identity, batch_id = row[0]
                result = read_line(item, request_of(spec, max_tokens), structured, batch_id or f"file:{path.name}")
                if isinstance(result, str):
                    counts["resend"] += 1
                    continue
                cache.put(key, identity, result)
                counts["answers" if result.ok else "failures"] += 1
    return counts



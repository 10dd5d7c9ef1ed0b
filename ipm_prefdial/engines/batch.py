"""A role's requests through the provider's batch API (OpenAI's ``/v1/files`` + ``/v1/batches``, Azure OpenAI's global
batch), or written as batch files for any runner (``--batch-export``): ``BatchEngine``, a ``Metered`` view of an
``OpenAIEngine``.

The pending requests go in files under the provider's limits, one JSON line per request whose ``custom_id`` is the
request's cache key and whose body is what the online engine would send, so the answers are the same and land in the
same cache under the same keys. The book of batches (``batch_book``) lives in the cache's database: a part is
recorded before its file is uploaded, its file id before the batch is made, its batch id before anything waits on
it. A rerun re-attaches to the live batches that hold its requests (a part uploaded but without a batch is found in
the provider's list by its file, else its batch is made then), so no request is ever in two live batches and none
is paid twice. A batch that ends (completed, expired, cancelled, failed) is collected: its output and error files
are read, answers committed, and only the lines without an answer (``batch_expired``, ``batch_cancelled``, a
timeout, a 5xx, a failed batch's quota error) are submitted again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from urllib.parse import urlencode

import aiohttp

from ipm_prefdial.engines.batch_book import EXPORTED, LIVE, TERMINAL, Book, output_spec, read_line, request_of
from ipm_prefdial.engines.breaker import EXIT_REFUSED, EngineStop
from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.engines.metered import Metered
from ipm_prefdial.engines.requests import ChatRequest, ChatResult, failure
from ipm_prefdial.engines.spend import Budget

__all__ = ["LIVE", "BatchAPI", "BatchEngine", "Book", "status_of"]

OPENAI_LIMITS = (50_000, 200_000_000)  # lines and bytes of one batch input file
AZURE_LIMITS = (100_000, 200_000_000)
QUOTA = ("token_limit_exceeded", "rate_limit_exceeded", "quota_exceeded")  # a failed batch worth making again
API_ATTEMPTS = 5  # tries of one call to the files or batches API (connection errors, 429, 5xx)
AZURE_FILE_SECONDS = 14 * 86_400  # Azure's batch input files expire after this (its least: 14 days)
QUOTA_WAIT = 1800.0  # the longest wait after a batch failed for the enqueued-token quota (the first: --batch-poll)


# ------------------------------------------------------------------------------------------------ the provider
class BatchAPI:
    """The files and batches API of an ``OpenAIEngine``'s endpoint (its session, key and query)."""

    def __init__(self, engine):
        self.engine = engine
        base = engine.base_url
        if "/deployments/" in base:  # an Azure deployment URL: files and batches sit at the resource's /openai
            base = base[: base.index("/deployments/")]
        self.base = base
        self.azure = engine.azure
        self.limits = AZURE_LIMITS if self.azure else OPENAI_LIMITS
        self.endpoint = "/chat/completions" if self.azure else "/v1/chat/completions"

    def url(self, path: str, **query) -> str:
        params = {**self.engine.query, **query}
        return self.base + path + (f"?{urlencode(params)}" if params else "")

    async def call(self, method: str, path: str, *, body: bytes | None = None, content_type: str = "application/json",
                   query: dict | None = None, raw: bool = False, attempts: int = API_ATTEMPTS):
        """One call, retried on connection errors, 429 and 5xx (``attempts`` tries); a refusal stops the build (exit
        1), an endpoint that keeps failing stops it too (exit 75); the answer's JSON (or bytes, ``raw``)."""
        engine = self.engine
        if engine._client is None:
            await engine.start()
        url, what = self.url(path, **(query or {})), f"{method} {path}"
        detail = "no answer"
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(min(2.0 ** attempt, 30.0))
            try:
                async with engine._client.request(method, url, data=body,
                                                  headers={"Content-Type": content_type}) as reply:
                    status, data = reply.status, await reply.read()
            except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                detail = engine._clip(f"{type(exc).__name__}: {exc}", 300)
                continue
            text = data.decode("utf-8", errors="replace")
            if status in (401, 403, 404):
                raise engine._refusal(status, text, what)
            if status == 429 or status >= 500:
                detail = f"HTTP {status}: {engine._clip(text, 200)}"
                continue
            if status >= 400:
                if "Cannot find file" in text or "not found" in text.lower():  # a new file not yet visible
                    detail = f"HTTP {status}: {engine._clip(text, 200)}"
                    continue
                raise EngineStop(engine.endpoint, f"HTTP {status}", f"{what}: {engine._clip(text, 300)}",
                                 EXIT_REFUSED)
            if raw:
                return data
            try:
                return json.loads(data)
            except ValueError:
                detail = f"{what}: the answer is not JSON: {engine._clip(text, 120)!r}"
        raise EngineStop(engine.endpoint, "batch API unreachable", f"{what}: {detail} (after {attempts} tries)")

    async def upload(self, content: bytes, name: str) -> str:
        boundary = "ipm" + secrets.token_hex(12)
        fields = {"purpose": "batch"}
        if self.azure:  # without an expiry, a resource holds at most 500 batch input files (with one: 10,000)
            fields.update({"expires_after.anchor": "created_at", "expires_after.seconds": str(AZURE_FILE_SECONDS)})
        body = "".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"\r\n\r\n{value}\r\n"
                       for field, value in fields.items()).encode() + (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            "Content-Type: application/jsonl\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
        answer = await self.call("POST", "/files", body=body, content_type=f"multipart/form-data; boundary={boundary}")
        return answer["id"]

    async def create(self, file_id: str, part: int) -> dict:
        """Make the batch of ``file_id``. A try whose answer is lost (a timeout, a reset, a 5xx) may have made it: the
        provider's list is asked before the next try, so a file never becomes two batches."""
        payload = json.dumps({"input_file_id": file_id, "endpoint": self.endpoint, "completion_window": "24h",
                              "metadata": {"ipm_part": str(part)}}).encode()
        for attempt in range(API_ATTEMPTS):
            try:
                return await self.call("POST", "/batches", body=payload, attempts=1)
            except EngineStop as stop:
                if stop.exit_code == EXIT_REFUSED or attempt == API_ATTEMPTS - 1:
                    raise
            found = await self.find(file_id)
            if found is not None:
                return found
            await asyncio.sleep(min(2.0 ** (attempt + 1), 30.0))
        raise AssertionError("unreachable")

    async def retrieve(self, batch_id: str) -> dict:
        return await self.call("GET", f"/batches/{batch_id}")

    async def cancel(self, batch_id: str) -> dict:
        return await self.call("POST", f"/batches/{batch_id}/cancel")

    async def find(self, file_id: str) -> dict | None:
        """The batch made of ``file_id``, if one was made (a build killed between making it and recording it)."""
        after = None
        while True:
            page = await self.call("GET", "/batches", query={"limit": "100", **({"after": after} if after else {})})
            for batch in page.get("data") or []:
                if batch.get("input_file_id") == file_id:
                    return batch
            if not page.get("has_more") or not page.get("data"):
                return None
            after = page.get("last_id") or page["data"][-1]["id"]

    async def lines(self, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        data = await self.call("GET", f"/files/{file_id}/content", raw=True)
        return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def status_of(batch: dict) -> str:
    return str(batch.get("status") or "").lower()  # Azure's samples write "Validating"


# ------------------------------------------------------------------------------------------------ batches
class BatchEngine(Metered):
    """A role's requests through the provider's batch API (``export_dir``: written as batch files instead). Results
    are committed to the cache here (they come out marked ``from_cache``); requests still in a running batch when
    ``wait`` runs out end as ``batch_pending`` (not recorded: a rerun collects them)."""

    def __init__(self, inner, role: str, budget: Budget, cache: RequestCache, *, wait: float | None = None,
                 poll: float = 60.0, max_lines: int | None = None, max_bytes: int | None = None,
                 export_dir: str | Path | None = None):
        super().__init__(inner, role, budget)
        if cache is None:
            raise ValueError("batches need the request cache (not --no-cache)")
        self.cache, self.wait, self.poll = cache, wait, poll
        self.max_lines, self.max_bytes = max_lines, max_bytes
        self.export_dir = Path(export_dir) if export_dir else None
        if self.export_dir:
            if inner.structured == "auto":  # no server to ask: the API's own form (JSON schema)
                inner.structured = "json_schema"
            # this view's files: by role and model (two policy models write apart); an earlier export's files of
            # it go (what they held is answered now, or written again below)
            self.stem = f"{role}-{hashlib.sha256(inner.identity.encode()).hexdigest()[:8]}"
            for old in self.export_dir.glob(f"{self.stem}-*.jsonl"):
                old.unlink()
        self.api = BatchAPI(inner)
        self.book = Book(cache, f"export:{self.export_dir.name}" if self.export_dir else inner.endpoint)
        self.progress = None
        self.bar = None
        self.exported: list[Path] = []

    def describe(self) -> dict:
        return {**self.inner.describe(), "mode": "batch-export" if self.export_dir else "batch"}

    async def start(self) -> None:
        if self.export_dir is None:  # an export sends nothing: the endpoint need not be reachable
            await self.inner.start()

    def attach_progress(self, progress) -> None:
        self.progress = progress

    def stream(self, requests: Sequence[ChatRequest]) -> AsyncIterator[tuple[int, ChatResult]]:
        return self._export(requests) if self.export_dir else self._batches(requests)

    def body_line(self, key: str, request: ChatRequest) -> bytes:
        line = {"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": self.inner.body(request)}
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"

    def files(self, keys: list[str], requests: dict[str, ChatRequest]) -> list[tuple[list[str], bytes]]:
        """The lines of ``keys`` in files under the limits (lines, bytes)."""
        max_lines = min(self.max_lines or self.api.limits[0], self.api.limits[0])
        max_bytes = min(self.max_bytes or self.api.limits[1], self.api.limits[1])
        out: list[tuple[list[str], bytes]] = []
        current: list[str] = []
        chunks: list[bytes] = []
        size = 0
        for key in keys:
            line = self.body_line(key, requests[key])
            if current and (len(current) >= max_lines or size + len(line) > max_bytes):
                out.append((current, b"".join(chunks)))
                current, chunks, size = [], [], 0
            current.append(key)
            chunks.append(line)
            size += len(line)
        if current:
            out.append((current, b"".join(chunks)))
        return out

    # -- export ------------------------------------------------------------------------------------------------
    async def _export(self, requests: Sequence[ChatRequest]) -> AsyncIterator[tuple[int, ChatResult]]:
        identity = self.identity
        keyed = {r.key(identity): r for r in requests}
        self.export_dir.mkdir(parents=True, exist_ok=True)
        for n, (keys, content) in enumerate(self.files(list(keyed), keyed), 1):
            path = self.export_dir / f"{self.stem}-{n:03d}.jsonl"
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_bytes(content)
            tmp.replace(path)
            self.book.add(self.role, identity, self.inner.structured,
                          [(k, output_spec(keyed[k]), keyed[k].sampling.max_tokens) for k in keys], 0.0, EXPORTED)
            self.exported.append(path)
        message = f"written to {self.export_dir}: run it, then ipm batches import OUTPUT and the same command again"
        for i, _ in enumerate(requests):
            yield i, failure("batch_pending", message, from_cache=True)

    # -- the batch API ---------------------------------------------------------------------------------------
    async def _batches(self, requests: Sequence[ChatRequest]) -> AsyncIterator[tuple[int, ChatResult]]:
        identity = self.identity
        keys = [r.key(identity) for r in requests]
        index = {key: i for i, key in enumerate(keys)}
        remaining = dict.fromkeys(keys)  # insertion-ordered set: what is still to come
        price = self.budget.price(self.role)
        live = self.book.open_parts(keys)
        assigned = {key for p in live for key in self._lines_of(p) if key in remaining}
        for p in live:  # their worst case is held again: they were paid for when submitted
            self.budget.held += p["worst_usd"]
            p["cancelled_before"] = p["status"] == "cancelling"  # (ipm batches cancel, before this run)
        deadline = None if self.wait is None else time.monotonic() + self.wait
        resubmitted: Counter = Counter()
        limit = getattr(self.inner, "max_attempts", 5)
        quota_wait, submit_at = self.poll, 0.0  # after a quota failure, no new batch before submit_at
        self._show(live, len(keys))
        while remaining:
            todo = [k for k in remaining if k not in assigned]
            if todo and time.monotonic() >= submit_at:
                made, refused = await self._submit(todo, {k: requests[index[k]] for k in todo}, identity, price)
                live += made
                assigned.update(k for p in made for k in self._lines_of(p))
                for key in refused:
                    del remaining[key]
                    yield index[key], failure("spend_cap", self.budget.line(), from_cache=True)
            for p in list(live):
                done = await self._advance(p)
                if done is None:
                    continue
                live.remove(p)
                results, again = done
                for key, result in results.items():
                    if key in remaining:
                        del remaining[key]
                        yield index[key], result
                if p["status"] == "failed":  # for quota: the enqueued tokens free up as other batches end
                    submit_at, quota_wait = time.monotonic() + quota_wait, min(quota_wait * 2, QUOTA_WAIT)
                for key, why in again.items():
                    if key not in remaining:
                        continue
                    assigned.discard(key)
                    if p["status"] == "cancelled" and not p.get("cancelled_before"):  # cancelled while this run
                        # waited (ipm batches cancel): its lines are not sent again by this run
                        del remaining[key]
                        yield index[key], failure("batch_pending", f"batch {p['batch_id']} was cancelled; run the "
                                                  "build again to send its lines again", from_cache=True)
                        continue
                    resubmitted[key] += p["status"] not in ("new", "failed")  # (never sent, or refused for quota)
                    if resubmitted[key] >= limit:
                        del remaining[key]
                        yield index[key], failure("timeout", f"no answer in {limit} batches (last: {why})",
                                                  from_cache=True)
            # a line is waited for only while a live part holds it
            assigned &= {key for p in live for key in self._lines_of(p)}
            self._show(live, len(keys))
            if not remaining:
                break
            if deadline is not None and time.monotonic() >= deadline:
                ids = ", ".join(str(p["batch_id"]) for p in live[:3]) + (" ..." if len(live) > 3 else "")
                for key in list(remaining):
                    yield index[key], failure("batch_pending", f"still running at the provider (batches {ids})",
                                              from_cache=True)
                return
            if all(k in assigned for k in remaining) or time.monotonic() < submit_at:
                await asyncio.sleep(self.poll)  # (lines to send again go out at once, unless the quota is spent)

    def _lines_of(self, part: dict) -> dict:
        memo = part.setdefault("_lines", None)
        if memo is None:
            memo = part["_lines"] = self.book.lines(part["part"])
        return memo

    async def _submit(self, todo: list[str], requests: dict[str, ChatRequest], identity: str, price
                      ) -> tuple[list[dict], list[str]]:
        """New parts for ``todo`` (as many as the spend cap leaves room for); (parts, keys refused by the cap)."""
        worst = {k: price.worst(requests[k], batch=True) for k in todo}
        allowed, refused = [], []
        for key in todo:
            if refused or not self.budget.hold(worst[key]):
                refused.append(key)
            else:
                allowed.append(key)
        self.budget.stopped += len(refused)
        made = []
        for keys, content in self.files(allowed, requests):
            held = sum(worst[k] for k in keys)
            part = self.book.add(self.role, identity, self.inner.structured,
                                 [(k, output_spec(requests[k]), requests[k].sampling.max_tokens) for k in keys], held)
            file_id = await self.api.upload(content, f"ipm-{self.role}-{part}.jsonl")
            self.book.update(part, file_id=file_id, status="uploaded")
            record = {"part": part, "file_id": file_id, "batch_id": None, "status": "uploaded", "lines": len(keys),
                      "worst_usd": held, "structured": self.inner.structured, "counts": None}
            await self._make(record)
            made.append(record)
        return made, refused

    async def _make(self, part: dict) -> None:
        batch = await self.api.create(part["file_id"], part["part"])
        part.update(batch_id=batch["id"], status=status_of(batch))
        self.book.update(part["part"], batch_id=batch["id"], status=part["status"])

    async def _advance(self, part: dict) -> tuple[dict[str, ChatResult], dict[str, str]] | None:
        """Ask a live part's batch how it stands; once it has ended, its (results, lines to send again)."""
        if part["status"] == "new":  # recorded, never uploaded (a build killed meanwhile): sent again
            return self._resend(part, "never uploaded")
        if part["batch_id"] is None:  # uploaded, batch not recorded: made by the killed build, or not at all
            found = await self.api.find(part["file_id"])
            if found is not None:
                part.update(batch_id=found["id"], status=status_of(found))
                self.book.update(part["part"], batch_id=found["id"], status=part["status"])
            else:
                try:
                    await self._make(part)
                except EngineStop as stop:
                    if "not found" not in stop.detail.lower() and "cannot find file" not in stop.detail.lower():
                        raise
                    return self._resend(part, "input file gone")  # (expired, deleted): its lines in a new one
        batch = await self.api.retrieve(part["batch_id"])
        status = status_of(batch)
        counts = batch.get("request_counts") or {}
        part["counts"] = json.dumps(counts)
        if status not in TERMINAL:
            if status != part["status"]:
                part["status"] = status
                self.book.update(part["part"], status=status, counts=part["counts"])
            return None
        lines = self._lines_of(part)
        results: dict[str, ChatResult] = {}
        again: dict[str, str] = {}
        part["status"] = status
        if status == "failed":
            errors = (batch.get("errors") or {}).get("data") or [{}]
            code, message = errors[0].get("code"), errors[0].get("message")
            if code not in QUOTA:
                self.budget.release(part["worst_usd"])
                self.book.update(part["part"], status=status, counts=part["counts"])
                raise EngineStop(self.inner.endpoint, "batch failed", f"{part['batch_id']}: {code}: {message}",
                                 EXIT_REFUSED)
            again = dict.fromkeys(lines, f"batch failed: {code}")
        else:
            # lines committed by an earlier collection of this batch (a build killed while collecting it) are
            # neither committed nor counted again
            known = self.cache.answers(list(lines))
            results.update(known)  # (handed over again if this run still waits for one: nothing is charged)
            for item in await self.api.lines(batch.get("output_file_id")) + await self.api.lines(
                    batch.get("error_file_id")):
                key = item.get("custom_id")
                if key not in lines or key in known:
                    continue
                spec, max_tokens = lines[key]
                result = read_line(item, request_of(spec, max_tokens), part["structured"], part["batch_id"])
                if isinstance(result, str):
                    again[key] = result
                    continue
                self.inner._scrub(result)  # a server's words may echo what we sent: secrets masked
                self.cache.put(key, self.identity, result)
                self.budget.charge(self.role, result, fresh=True)
                result.from_cache = True
                results[key] = result
            for key in lines:
                if key not in results and key not in again and key not in known:
                    again[key] = "not in the output"
        self.budget.release(part["worst_usd"])
        self.book.update(part["part"], status=status, counts=part["counts"])
        return results, again

    def _resend(self, part: dict, why: str) -> tuple[dict, dict[str, str]]:
        """A part that never became a batch, dropped: none of its lines is held, all go in a new one."""
        lines = self._lines_of(part)
        self.book.drop(part["part"])
        self.budget.release(part["worst_usd"])
        part["status"] = "new"  # (its lines do not use up their tries)
        return {}, dict.fromkeys(lines, why)

    def _show(self, live: list[dict], total: int) -> None:
        if self.progress is None:
            return
        states = Counter(p["status"] for p in live)
        text = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none running"
        done = sum(json.loads(p["counts"] or "{}").get("completed", 0) for p in live)
        if self.bar is None:
            self.bar = self.progress.add_task(f"batches {self.role}", total=total)
        self.progress.update(self.bar, description=f"batches {self.role}: {text}", completed=done)

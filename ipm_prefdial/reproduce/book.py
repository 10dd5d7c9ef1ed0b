"""``OUT/stages.json``: what each stage of ``ipm reproduce`` read and wrote, by content hash, so a rerun skips it.

A stage is skipped when the book holds it ``done`` with the same fingerprint (the sha256 of its settings and of the
content of everything it reads) and everything it wrote is still there with the content it recorded. A file or
directory is hashed by content (sha256 of its files' bytes and relative paths); the book remembers each hash with
a stat digest (sizes and modification times) and hashes again only when that changed, so a rerun does not read
gigabytes of checkpoints to find them unchanged. The book is replaced atomically after every change: a kill loses
at most the stage in progress (left ``running``, so the next run does it again).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from ipm_prefdial.release.files import write_bytes_atomic

VERSION = 1
CHUNK = 1 << 20


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def stat_digest(path: Path) -> str | None:
    """sha256 of the relative paths, sizes and modification times under ``path`` (None when it is missing)."""
    if not path.exists():
        return None
    h = hashlib.sha256()
    for f in _files(path):
        st = f.stat()
        h.update(f"{f.relative_to(path) if f != path else f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def content_digest(path: Path) -> str:
    """sha256 of the relative paths and bytes of the files under ``path`` (a file: its name and bytes)."""
    h = hashlib.sha256()
    for f in _files(path):
        h.update(f"{f.relative_to(path) if f != path else f.name}\0".encode())
        with f.open("rb") as stream:
            while chunk := stream.read(CHUNK):
                h.update(chunk)
        h.update(b"\n")
    return h.hexdigest()


def fingerprint(settings: dict, inputs: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps({"settings": settings, "inputs": inputs}, sort_keys=True,
                                     default=str).encode()).hexdigest()


class Book:
    """The stages' records and the content hashes of the paths they read and wrote."""

    def __init__(self, out: Path):
        self.out = out
        self.path = out / "stages.json"
        data = json.loads(self.path.read_text(encoding="utf-8")) if self.path.is_file() else {}
        self.stages: dict[str, dict] = data.get("stages", {}) if data.get("version") == VERSION else {}
        self.hashes: dict[str, dict] = data.get("hashes", {}) if data.get("version") == VERSION else {}

    def _key(self, path: Path) -> str:
        return os.path.relpath(path, self.out)

    def digest(self, path: Path) -> str | None:
        """The content hash of ``path`` (None when missing), computed again only when its stat digest changed."""
        stat = stat_digest(path)
        if stat is None:
            return None
        known = self.hashes.get(self._key(path))
        if known and known["stat"] == stat:
            return known["sha256"]
        sha = content_digest(path)
        self.hashes[self._key(path)] = {"stat": stat, "sha256": sha}
        return sha

    def fresh(self, name: str, print_: str, writes: dict[str, Path]) -> bool:
        """Whether stage ``name`` is done with this fingerprint and its outputs hold what it wrote."""
        record = self.stages.get(name)
        if not record or record.get("status") != "done" or record.get("fingerprint") != print_:
            return False
        return all(self.digest(path) == record["wrote"].get(key) for key, path in writes.items())

    def start(self, name: str, print_: str, read: dict[str, str | None], settings: dict) -> None:
        self.stages[name] = {"status": "running", "fingerprint": print_, "read": read, "settings": settings,
                             "started": _now()}
        self.save()

    def finish(self, name: str, writes: dict[str, Path], seconds: float, summary: dict | None = None) -> None:
        record = self.stages[name]
        record.update(status="done", wrote={key: self.digest(path) for key, path in writes.items()},
                      seconds=round(seconds, 1), finished=_now())
        if summary:
            record["summary"] = summary
        self.save()

    def fail(self, name: str, error: str, seconds: float) -> None:
        self.stages[name].update(status="failed", error=error, seconds=round(seconds, 1), finished=_now())
        self.save()

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        data = {"version": VERSION, "stages": self.stages, "hashes": self.hashes}
        write_bytes_atomic(self.path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

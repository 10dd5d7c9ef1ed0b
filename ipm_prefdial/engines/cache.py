"""The persistent request cache: SQLite in WAL mode, one row per answered request, committed on arrival.

Answers and failures live in separate tables: a failure is remembered (so the manifest can count it and a
rerun need not re-send a request whose answer was malformed) but never served as an answer.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from ipm_prefdial.engines.base import ChatResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    result TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY,
    stamp TEXT NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    result TEXT NOT NULL,
    count INTEGER NOT NULL DEFAULT 1,
    updated REAL NOT NULL
);
"""
CHUNK = 500  # keys per SELECT (SQLite's variable limit is far above this)


class RequestCache:
    """Thread-compatible within one event loop; many processes may share the file (WAL, busy timeout)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed row survives a process kill
        self._db.executescript(SCHEMA)

    @classmethod
    def in_dir(cls, cache_dir: str | Path) -> RequestCache:
        return cls(Path(cache_dir) / "requests.sqlite")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _select(self, table: str, keys: list[str]) -> Iterator[tuple[str, str]]:
        for i in range(0, len(keys), CHUNK):
            part = keys[i : i + CHUNK]
            marks = ",".join("?" * len(part))
            yield from self._db.execute(f"SELECT key, result FROM {table} WHERE key IN ({marks})", part)

    def answers(self, keys: Iterable[str]) -> dict[str, ChatResult]:
        return {k: ChatResult.from_json(v) for k, v in self._select("answers", list(dict.fromkeys(keys)))}

    def failures(self, keys: Iterable[str]) -> dict[str, ChatResult]:
        return {k: ChatResult.from_json(v) for k, v in self._select("failures", list(dict.fromkeys(keys)))}

    def put(self, key: str, model: str, result: ChatResult) -> None:
        """Commit one result now, in one transaction (WAL, synchronous=NORMAL: no fsync per commit, so this costs
        tens of microseconds). An answer replaces an earlier failure of the same request."""
        now = time.time()
        data = result.to_json()
        self._db.execute("BEGIN")
        try:
            if result.ok:
                self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)", (key, model, data, now))
                self._db.execute("DELETE FROM failures WHERE key = ?", (key,))
            else:
                self._db.execute(
                    "INSERT INTO failures VALUES (?, ?, ?, ?, 1, ?) ON CONFLICT(key) DO UPDATE SET "
                    "kind = excluded.kind, result = excluded.result, count = count + 1, updated = excluded.updated",
                    (key, model, result.error_kind, data, now),
                )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- model files' digests (engines.identity): remembered by real path and stat --------------------------
    def remembered_sha256(self, path: str, stamp: str) -> str | None:
        row = self._db.execute("SELECT sha256 FROM file_hashes WHERE path = ? AND stamp = ?", (path, stamp)).fetchone()
        return row[0] if row else None

    def remember_sha256(self, path: str, stamp: str, sha256: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?)", (path, stamp, sha256))

    def counts(self) -> dict[str, int]:
        (answers,) = self._db.execute("SELECT COUNT(*) FROM answers").fetchone()
        (failures,) = self._db.execute("SELECT COUNT(*) FROM failures").fetchone()
        return {"answers": answers, "failures": failures}

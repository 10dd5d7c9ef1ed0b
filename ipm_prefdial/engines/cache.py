"""The persistent request cache: SQLite in WAL mode, one row per answered request, committed on arrival.

Answers and failures live in separate tables: a failure is remembered (so the manifest can count it and a
rerun need not re-send a request whose answer was malformed) but never served as an answer.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ipm_prefdial.engines.requests import ChatResult
from ipm_prefdial.errors import InputError

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
CREATE TABLE IF NOT EXISTS batch_parts (
    part INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL,
    role TEXT NOT NULL,
    identity TEXT NOT NULL,
    structured TEXT NOT NULL,
    file_id TEXT,
    batch_id TEXT,
    status TEXT NOT NULL,
    lines INTEGER NOT NULL,
    worst_usd REAL NOT NULL,
    counts TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_lines (
    key TEXT NOT NULL,
    part INTEGER NOT NULL,
    output TEXT,
    max_tokens INTEGER NOT NULL,
    PRIMARY KEY (key, part)
);
CREATE INDEX IF NOT EXISTS batch_lines_part ON batch_lines (part);
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


class CacheError(InputError):
    """The cache file cannot be used (damaged, locked, unreadable). The message is one line: the file, the reason
    and what to do."""


class RequestCache:
    """Thread-compatible within one event loop; many processes may share the file (WAL, busy timeout).

    Any failure to read or write it raises ``CacheError`` before the caller writes anything: every read returns all
    the rows asked for or raises, so a build never writes parquet files from a half-read cache."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._guard():
            self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a committed row survives a process kill
            self._db.executescript(SCHEMA)
            # while no failure is recorded, an answer is one INSERT (its own transaction), not BEGIN, INSERT,
            # DELETE FROM failures, COMMIT: a quarter of the driver's cost per request on a fast server
            self._failures_seen = self._db.execute("SELECT EXISTS (SELECT 1 FROM failures)").fetchone()[0] == 1
        self.new_answers = 0  # answers committed through this object: what a stopped run says it kept

    def _damaged(self, reason: str) -> CacheError:
        return CacheError(f"{self.path}: the request cache is damaged ({reason}); move it away (for example "
                          f"mv {self.path} {self.path}.damaged) and run again, which asks its requests again, or "
                          "point --cache-dir at another directory")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:  # locked, read-only, disk I/O: the file may be fine
            raise CacheError(f"{self.path}: cannot use the request cache ({exc}); check that no other program holds "
                             "it and that its directory is writable, or point --cache-dir elsewhere") from None
        except sqlite3.DatabaseError as exc:  # not a database, malformed pages
            raise self._damaged(str(exc)) from None

    @classmethod
    def in_dir(cls, cache_dir: str | Path) -> RequestCache:
        return cls(Path(cache_dir) / "requests.sqlite")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _select(self, table: str, keys: Iterable[str]) -> dict[str, ChatResult]:
        """Every stored result of ``keys``, all read and decoded, or CacheError."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, ChatResult] = {}
        with self._guard():
            for i in range(0, len(keys), CHUNK):
                part = keys[i : i + CHUNK]
                marks = ",".join("?" * len(part))
                for key, text in self._db.execute(f"SELECT key, result FROM {table} WHERE key IN ({marks})", part):
                    try:
                        out[key] = ChatResult.from_json(text)
                    except (ValueError, TypeError) as exc:
                        raise self._damaged(f"{table} row {key[:12]}... does not read: {exc}") from None
        return out

    def answers(self, keys: Iterable[str]) -> dict[str, ChatResult]:
        return self._select("answers", keys)

    def failures(self, keys: Iterable[str]) -> dict[str, ChatResult]:
        return self._select("failures", keys)

    def put(self, key: str, model: str, result: ChatResult) -> None:
        """Commit one result now, in one transaction (WAL, synchronous=NORMAL: no fsync per commit, so this costs
        tens of microseconds). An answer replaces an earlier failure of the same request."""
        now = time.time()
        data = result.to_json()
        with self._guard():
            self._commit(key, model, result, data, now)
        self.new_answers += result.ok

    def forget_failures(self, keys: Iterable[str]) -> None:
        """Drop recorded failures (the client errors of an endpoint that turned out to refuse every request: they
        say nothing about those requests, and must not be replayed once the options are fixed)."""
        keys = list(keys)
        with self._guard():
            for i in range(0, len(keys), CHUNK):
                part = keys[i : i + CHUNK]
                self._db.execute(f"DELETE FROM failures WHERE key IN ({','.join('?' * len(part))})", part)

    def _commit(self, key: str, model: str, result: ChatResult, data: str, now: float) -> None:
        if result.ok and not self._failures_seen:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?)", (key, model, data, now))
            return
        self._failures_seen = self._failures_seen or not result.ok
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
        with self._guard():
            row = self._db.execute("SELECT sha256 FROM file_hashes WHERE path = ? AND stamp = ?",
                                   (path, stamp)).fetchone()
        return row[0] if row else None

    def remember_sha256(self, path: str, stamp: str, sha256: str) -> None:
        with self._guard():
            self._db.execute("INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?)", (path, stamp, sha256))

    # -- the book of batches (engines.batch): parts (input files and the provider's batch of each) and their lines
    def sql(self, statement: str, params: Iterable = ()) -> list[tuple]:
        """One statement on the cache's database (the batch book's tables), every row read, or CacheError."""
        with self._guard():
            return self._db.execute(statement, tuple(params)).fetchall()

    def sql_many(self, statement: str, rows: Iterable[tuple]) -> None:
        """One statement for many rows, in one transaction."""
        with self._guard():
            self._db.execute("BEGIN")
            try:
                self._db.executemany(statement, rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def counts(self) -> dict[str, int]:
        with self._guard():
            (answers,) = self._db.execute("SELECT COUNT(*) FROM answers").fetchone()
            (failures,) = self._db.execute("SELECT COUNT(*) FROM failures").fetchone()
        return {"answers": answers, "failures": failures}

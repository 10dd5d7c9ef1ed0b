"""Atomic, deterministic file writes, and reading a config's rows back."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features

from ipm_prefdial.release.features import CONFIG_SPLITS, data_file


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


ROW_GROUP = 5000  # rows per parquet row group


class ParquetSink:
    """Rows -> one parquet file with the config's exact schema (HF features embedded), written a row group at a
    time into a temp file beside it and put in place by ``commit``: however many rows a build makes, it holds at
    most one row group of them here. The same rows give the same bytes, however they arrive."""

    def __init__(self, path: Path, features: Features):
        self.path = path
        self.schema = features.arrow_schema
        self.tmp = _tmp(path)
        self.pending: list[dict] = []
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0
        self.arrow_bytes = 0  # what the rows take in Arrow (the card's num_bytes), summed over row groups

    def add(self, row: dict) -> None:
        self.pending.append(row)
        if len(self.pending) >= ROW_GROUP:
            self._flush()

    def extend(self, rows: list[dict]) -> None:
        for row in rows:
            self.add(row)

    def _flush(self) -> None:
        if not self.pending:
            return
        table = pa.Table.from_pylist(self.pending, schema=self.schema)
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd", write_statistics=True)
        self.writer.write_table(table, row_group_size=ROW_GROUP)
        self.rows += table.num_rows
        self.arrow_bytes += table.nbytes
        self.pending = []
        del table
        # Arrow's allocator keeps what it freed for reuse: given back now, a build's peak memory stays that of one
        # row group instead of growing with every file being written at once
        pa.default_memory_pool().release_unused()

    def commit(self) -> dict | None:
        """Put the file in place: its rows, bytes, Arrow bytes and sha256; None, and no file, when no row came (a
        split that ``load_dataset`` could not open)."""
        self._flush()
        if self.writer is None:
            return None
        self.writer.close()
        self.writer = None
        os.replace(self.tmp, self.path)
        return {"rows": self.rows, "bytes": self.path.stat().st_size, "arrow_bytes": self.arrow_bytes,
                "sha256": sha256_file(self.path)}

    def discard(self) -> None:
        """Drop what was written (an interrupted build leaves the files in place as they were)."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        self.tmp.unlink(missing_ok=True)
        self.pending = []


class DataFiles:
    """The parquet files of a build while it is made: a sink per (config, split), put in place together by
    ``commit`` at the end, so a build that stops early leaves the directory as it was."""

    def __init__(self, root: Path, features: dict[str, Features]):
        self.root = root
        self.features = features
        self.sinks: dict[tuple[str, str], ParquetSink] = {}

    def sink(self, config: str, split: str) -> ParquetSink:
        key = (config, split)
        if key not in self.sinks:
            self.sinks[key] = ParquetSink(self.root / data_file(config, split), self.features[config])
        return self.sinks[key]

    def __enter__(self) -> DataFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()

    def commit(self) -> dict[str, dict]:
        """data file -> its rows, bytes, Arrow bytes and sha256, in the order of the configs and their splits;
        splits without rows have no file."""
        files = {}
        for config, split in sorted(self.sinks, key=self._order):
            info = self.sinks.pop((config, split)).commit()
            if info is not None:
                files[data_file(config, split)] = info
        return files

    def discard(self) -> None:
        for sink in self.sinks.values():
            sink.discard()
        self.sinks.clear()

    def _order(self, key: tuple[str, str]) -> tuple[int, int]:
        config, split = key
        return list(self.features).index(config), CONFIG_SPLITS[config].index(split)


def stale_temp_files(folder: Path) -> list[Path]:
    """Temp files a killed build left in a data folder (``.<file>.<pid>.tmp``)."""
    return [p for p in folder.glob(".*.parquet.*.tmp") if p.is_file()]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_rows(root: Path, config: str, split: str, error: type[Exception],
              columns: list[str] | None = None) -> list[dict] | None:
    """The rows of a config's split in a build (None when the file is absent); a damaged file is ``error`` naming
    it."""
    path = root / data_file(config, split)
    if not path.is_file():
        return None
    try:
        return pq.read_table(path, columns=columns).to_pylist()
    except Exception as exc:  # pyarrow raises several kinds for a damaged file
        raise error(f"{data_file(config, split)}: not a readable parquet file ({exc})") from None

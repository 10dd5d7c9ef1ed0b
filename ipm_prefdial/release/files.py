"""Atomic, deterministic file writes, and reading a config's rows back."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features

from ipm_prefdial.release.features import data_file


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


def write_parquet_atomic(path: Path, rows: list[dict], features: Features) -> pa.Table:
    """Rows -> parquet with the config's exact schema (HF features embedded). Same rows, same bytes."""
    table = pa.Table.from_pylist(rows, schema=features.arrow_schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    try:
        if table.num_rows:
            pq.write_table(table, tmp, compression="zstd", row_group_size=5000, write_statistics=True)
        else:  # no row group at all: datasets reads a 0-row row group with batch size 0 and fails
            pq.ParquetWriter(tmp, table.schema, compression="zstd").close()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return table


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

"""A damaged request cache ends a build with one line naming the file and what to do, before any parquet file
is written: a build never writes data from a half-read cache."""

from __future__ import annotations

import shutil
import sqlite3

from typer.testing import CliRunner

from helpers import fake_build_args
from ipm_prefdial.cli import app

runner = CliRunner()


def build(url, out, cache_dir):
    return runner.invoke(app, [*fake_build_args(url, "--no-judge"), "--out", str(out), "--cache-dir", str(cache_dir)])


def assert_refused(result, db, out):
    assert result.exit_code == 1, result.output  # bad input: the cache file
    lines = [line for line in result.output.splitlines() if line.strip()]
    message = " ".join(lines)
    assert "Traceback" not in result.output
    assert str(db) in message.replace("\n", "") and "damaged" in message and "move it away" in message, message
    assert not (out / "data").exists() and not (out / "manifest.json").exists()


def test_a_file_that_is_not_a_database(fake_llm, tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    db = cache_dir / "requests.sqlite"
    db.write_bytes(b"this is not an SQLite database, it is a shopping list\n" * 200)
    out = tmp_path / "ds"
    assert_refused(build(fake_llm["url"], out, cache_dir), db, out)
    assert db.read_bytes().startswith(b"this is not")  # left as it was, for the user to look at


def test_damaged_pages_in_the_middle_of_a_real_cache(fake_pairs_build, fake_llm, tmp_path):
    cache_dir = tmp_path / "cache"
    shutil.copytree(fake_pairs_build["cache"], cache_dir)
    db = cache_dir / "requests.sqlite"
    with sqlite3.connect(db) as con:  # fold the WAL into the main file, as a closed cache is
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    assert len(data) > 20 * page
    for k in range(3, len(data) // page, 2):  # every other page after the schema, overwritten
        data[k * page:(k + 1) * page] = bytes([0xA5]) * page
    db.write_bytes(bytes(data))
    out = tmp_path / "ds"
    assert_refused(build(fake_llm["url"], out, cache_dir), db, out)


def test_an_unreadable_row(fake_pairs_build, fake_llm, tmp_path):
    cache_dir = tmp_path / "cache"
    shutil.copytree(fake_pairs_build["cache"], cache_dir)
    db = cache_dir / "requests.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("UPDATE answers SET result = '{\"text\": ' WHERE rowid = (SELECT MIN(rowid) FROM answers)")
    out = tmp_path / "ds"
    assert_refused(build(fake_llm["url"], out, cache_dir), db, out)

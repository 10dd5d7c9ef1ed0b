"""fetch_upstream for real, against a local HTTP server on 127.0.0.1 serving a byte-identical copy of
FailedESConv.json (its real upstream git blob id is pinned in UPSTREAM_FILES)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.sources import FAILED_JSON, LocalServer
from ipm_prefdial.sources import SourceError, load_source
from ipm_prefdial.sources.download import UPSTREAM_FILES, fetch_upstream

NAME = "FailedESConv.json"
BLOB = "d6c9172720c8d23d09a8a5dac779f59a8bc3077e"


def _blob_id(data: bytes) -> str:
    """What `git hash-object` prints, computed here rather than with the package's helper."""
    return hashlib.sha1(f"blob {len(data)}".encode() + b"\0" + data).hexdigest()


def _fetch(server: LocalServer, cache: Path) -> Path:
    return fetch_upstream(NAME, cache_dir=cache, base_url=server.url, timeout=5, attempts=1)


def test_shared_copy_has_the_pinned_blob_id(original):
    assert UPSTREAM_FILES[NAME] == BLOB
    if shutil.which("git"):
        out = subprocess.run(["git", "hash-object", str(FAILED_JSON)], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == BLOB


def test_first_call_downloads_then_the_cache_is_used(serve, tmp_path, original):
    server = serve({NAME: original})
    cache = tmp_path / "cache"
    path = _fetch(server, cache)
    assert server.paths == [f"/{NAME}"]
    assert path.parent == cache / "sources"
    assert path.name == f"{BLOB}-{NAME}"
    assert path.read_bytes() == original
    assert sorted(p.name for p in (cache / "sources").iterdir()) == [path.name]  # no temp files left behind

    again = _fetch(server, cache)
    assert again == path
    assert server.requests == 1

    server.stop()
    assert _fetch(server, cache) == path  # works offline once cached
    assert path.read_bytes() == original


def test_trailing_slash_in_base_url(serve, tmp_path, original):
    server = serve({NAME: original})
    path = fetch_upstream(NAME, cache_dir=tmp_path / "c", base_url=server.url + "/", timeout=5, attempts=1)
    assert server.paths == [f"/{NAME}"]
    assert path.read_bytes() == original


def test_corrupted_download_is_rejected_and_not_cached(serve, tmp_path, original):
    corrupted = bytearray(original)
    k = len(corrupted) // 2
    corrupted[k] = ord("X") if corrupted[k] != ord("X") else ord("Y")
    server = serve({NAME: bytes(corrupted)})
    cache = tmp_path / "cache"
    with pytest.raises(SourceError) as err:
        _fetch(server, cache)
    message = str(err.value)
    actual = _blob_id(bytes(corrupted))
    assert actual != BLOB
    assert BLOB in message
    assert actual in message
    assert f"{server.url}/{NAME}" in message
    assert "integrity check failed" in message
    assert server.requests == 1
    assert not (cache / "sources").exists() or not any((cache / "sources").iterdir())


def test_damaged_cache_entry_is_downloaded_again(serve, tmp_path, original):
    server = serve({NAME: original})
    cache = tmp_path / "cache"
    target = cache / "sources" / f"{BLOB}-{NAME}"
    target.parent.mkdir(parents=True)
    target.write_bytes(original[:-10])  # a truncated earlier download
    path = _fetch(server, cache)
    assert path == target
    assert server.requests == 1
    assert path.read_bytes() == original
    assert _fetch(server, cache) == target
    assert server.requests == 1


def test_http_404_is_a_clear_error(serve, tmp_path):
    server = serve({"other.json": b"[]"})
    cache = tmp_path / "cache"
    with pytest.raises(SourceError) as err:
        _fetch(server, cache)
    message = str(err.value)
    assert f"{server.url}/{NAME}" in message
    assert "HTTP 404" in message
    assert server.requests == 1
    assert not (cache / "sources").exists()


def test_404_is_not_retried(serve, tmp_path):
    server = serve({})
    with pytest.raises(SourceError, match="HTTP 404"):
        fetch_upstream(NAME, cache_dir=tmp_path / "c", base_url=server.url, timeout=5, attempts=3)
    assert server.requests == 1


def test_unreachable_server_is_a_clear_error(serve, tmp_path):
    server = serve({})
    server.stop()  # the port is now closed: connection refused
    with pytest.raises(SourceError) as err:
        _fetch(server, tmp_path / "cache")
    message = str(err.value)
    assert f"{server.url}/{NAME}" in message
    assert "download failed after 1 attempts" in message
    assert "IPM_ESCONV_PATH" in message


def test_load_source_downloads_failed_esconv_from_the_env_base_url(serve, tmp_path, monkeypatch, original):
    server = serve({NAME: original})
    monkeypatch.setenv("IPM_ESCONV_BASE_URL", server.url)
    cache = tmp_path / "cache"
    loaded = load_source("failed-esconv", cache_dir=cache)
    assert len(loaded.dialogues) == 196
    assert server.paths == [f"/{NAME}"]
    assert loaded.info["download"] == {"file": NAME, "git_blob_id": BLOB}
    assert (cache / "sources" / f"{BLOB}-{NAME}").read_bytes() == original
    assert loaded.dialogues == load_source("failed-esconv", FAILED_JSON).dialogues

    again = load_source("failed-esconv", cache_dir=cache)
    assert server.requests == 1
    assert again.dialogues == loaded.dialogues


def test_load_source_uses_ipm_cache_dir_by_default(serve, tmp_path, monkeypatch, original):
    server = serve({NAME: original})
    monkeypatch.setenv("IPM_ESCONV_BASE_URL", server.url)
    monkeypatch.setenv("IPM_CACHE_DIR", str(tmp_path / "env-cache"))
    loaded = load_source("failed-esconv")
    assert len(loaded.dialogues) == 196
    assert (tmp_path / "env-cache" / "sources" / f"{BLOB}-{NAME}").is_file()
    assert server.requests == 1

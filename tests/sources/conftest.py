"""Fixtures of the tests in tests/sources/, under a comment naming the test module they serve."""

from __future__ import annotations

import json

import pytest

from helpers import ESCONV_JSON, HUB_DIR
from helpers.sources import FAILED_JSON, SPLIT_INDICES, LocalServer
from ipm_prefdial.sources import LoadedSource, load_source


# test_download.py
@pytest.fixture
def serve(tmp_path):
    """serve(name -> bytes) starts a server for a directory holding those files."""
    servers: list[LocalServer] = []

    def start(files: dict[str, bytes]) -> LocalServer:
        root = tmp_path / f"www{len(servers)}"
        root.mkdir()
        for name, data in files.items():
            (root / name).write_bytes(data)
        servers.append(LocalServer(root))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="module")
def original() -> bytes:
    return FAILED_JSON.read_bytes()


# test_sources.py
@pytest.fixture(scope="module")
def esconv() -> LoadedSource:
    return load_source("esconv", ESCONV_JSON)


@pytest.fixture(scope="module")
def esconv_hub() -> LoadedSource:
    return load_source("esconv", HUB_DIR)


@pytest.fixture(scope="module")
def esconv_raw() -> list[dict]:
    return json.loads(ESCONV_JSON.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def shared_lists() -> dict[str, list[int]]:
    data = json.loads(SPLIT_INDICES.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


@pytest.fixture(scope="module")
def failed() -> LoadedSource:
    return load_source("failed-esconv", FAILED_JSON)


@pytest.fixture(scope="module")
def failed_raw() -> list[dict]:
    return json.loads(FAILED_JSON.read_text(encoding="utf-8"))

"""Fixtures of the tests in tests/mining/: those of test_pairs.py (a llama.cpp server of its own, a copy of a build)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def separate_server(smollm2):
    """A llama.cpp server started by the test, not by ipm (as a user would run llama-server)."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(smollm2)
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.n_parallel = 4
    params.n_ctx = 4 * 4096
    params.endpoint_metrics = True
    params.verbosity = 0
    params.cache_prompt = True
    server = xllamacpp.Server(params)
    yield server.listening_address.rstrip("/")
    del server


@pytest.fixture
def ds(fake_pairs_build, tmp_path):
    """A copy of a whole build (the fake server's: the rules are about the data, not the engine)."""
    copy = tmp_path / "ds"
    shutil.copytree(fake_pairs_build["out"], copy)
    return copy

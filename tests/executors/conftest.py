"""Fixtures of the tests in tests/executors/: the local build that test_ray.py compares Ray's with."""

from __future__ import annotations

import pytest

from helpers.executors import build
from ipm_prefdial.testing.fake_llm import FakeLLM


@pytest.fixture(scope="module")
def local_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray-local")
    with FakeLLM() as url:
        build(url, root / "ds", root / "cache")
    return root / "ds"

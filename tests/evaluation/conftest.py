"""Fixtures of the tests in tests/evaluation/: the predictions of test_eval_e2e.py."""

from __future__ import annotations

import pytest

from helpers.evaluation import infer_all


@pytest.fixture(scope="module")
def predictions(esconv_build, smollm2, tmp_path_factory):
    """`ipm infer` of every system on the first test turns of the full build, on the embedded engine with the real
    model: {"files", "cache", "root", "data", "engine"} ("engine": the options that name it again)."""
    return infer_all(esconv_build, tmp_path_factory.mktemp("infer"), [])


@pytest.fixture(scope="module")
def fake_predictions(sft_build, fake_llm, tmp_path_factory):
    """The same on the small build against the test server (the fast twin)."""
    return infer_all(sft_build, tmp_path_factory.mktemp("infer-fake"), ["--engine", "openai", "--base-url",
                                                                        fake_llm["url"]])


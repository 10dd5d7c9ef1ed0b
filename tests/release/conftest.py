"""Fixtures of the tests in tests/release/: a copy of the small SFT build for test_publish.py."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture
def build_copy(sft_build, tmp_path):
    copy = tmp_path / "ds"
    shutil.copytree(sft_build, copy)
    (copy / "notes.txt").write_text("scratch file that must not be uploaded")
    return copy

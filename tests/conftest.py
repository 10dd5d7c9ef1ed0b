from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipm_prefdial.build import build
from ipm_prefdial.config import BuildConfig

SHARED = Path(os.environ.get("IPM_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
ESCONV_DIR = SHARED / "data" / "esconv"
ESCONV_JSON = ESCONV_DIR / "ESConv.reconstructed.json"
HUB_DIR = ESCONV_DIR / "hf_thu-coai_esconv"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """No test reads the developer's environment or writes to the user cache."""
    monkeypatch.delenv("IPM_ESCONV_PATH", raising=False)
    monkeypatch.delenv("IPM_ESCONV_BASE_URL", raising=False)
    monkeypatch.setenv("IPM_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def esconv_build(tmp_path_factory) -> Path:
    """The full SFT build of ESConv with the paper's split, made once per session (read-only for tests)."""
    out = tmp_path_factory.mktemp("build") / "ipm_prefdial"
    build(BuildConfig(stage="sft", source_path=str(ESCONV_JSON), out=str(out)))
    return out

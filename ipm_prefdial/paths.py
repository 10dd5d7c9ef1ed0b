"""Where ipm_prefdial keeps what it caches (downloads, tokenizers, dequantised models, LLM answers): the one place
every command asks."""

from __future__ import annotations

import os
from pathlib import Path

from platformdirs import user_cache_dir


def default_cache_dir() -> Path:
    """``IPM_CACHE_DIR``, else the user cache directory (``~/.cache/ipm_prefdial`` on Linux)."""
    return Path(os.environ.get("IPM_CACHE_DIR") or user_cache_dir("ipm_prefdial"))


def cache_root(cache_dir: str | os.PathLike | None) -> Path:
    """The cache root a command was given (``--cache-dir``), else the default."""
    return Path(cache_dir) if cache_dir else default_cache_dir()

"""Download upstream ESConv files from a pinned commit, verified by their git blob ids, cached per user."""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from ipm_prefdial.paths import default_cache_dir
from ipm_prefdial.sources import SourceError

UPSTREAM_REPO = "thu-coai/Emotional-Support-Conversation"
UPSTREAM_COMMIT = "f262d062ad74cb39b17ea476facc81568ddcba24"
# file name -> git blob id at UPSTREAM_COMMIT (shared/data/esconv/README.md)
UPSTREAM_FILES = {
    "ESConv.json": "2f7a69eeda505053eac68f9ab26fd728d0f6db31",
    "FailedESConv.json": "d6c9172720c8d23d09a8a5dac779f59a8bc3077e",
}


def default_base_url() -> str:
    """Where upstream files are fetched from; ``IPM_ESCONV_BASE_URL`` points it at a mirror."""
    return os.environ.get("IPM_ESCONV_BASE_URL") or (
        f"https://raw.githubusercontent.com/{UPSTREAM_REPO}/{UPSTREAM_COMMIT}"
    )


def git_blob_id(data: bytes) -> str:
    """What ``git hash-object`` prints for a file with these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def fetch_upstream(name: str, *, cache_dir: Path | None = None, base_url: str | None = None,
                   timeout: float = 60.0, attempts: int = 3) -> Path:
    """Path of a verified local copy of upstream ``name``; downloads it on first use only."""
    if name not in UPSTREAM_FILES:
        raise SourceError(f"unknown upstream file {name!r}; known: {', '.join(UPSTREAM_FILES)}")
    expected = UPSTREAM_FILES[name]
    url = f"{(base_url or default_base_url()).rstrip('/')}/{name}"
    cache = (cache_dir or default_cache_dir()) / "sources"
    target = cache / f"{expected}-{name}"
    if target.is_file():
        if git_blob_id(target.read_bytes()) == expected:
            return target
        target.unlink()  # a damaged cache entry is fetched again, never trusted
    data = _download(url, timeout=timeout, attempts=attempts)
    actual = git_blob_id(data)
    if actual != expected:
        raise SourceError(
            f"{url}: integrity check failed: expected git blob id {expected}, got {actual} "
            f"({len(data)} bytes); the file was not cached"
        )
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


def _download(url: str, *, timeout: float, attempts: int) -> bytes:
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "ipm_prefdial"})
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 429:
                raise SourceError(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from None
            last = exc
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            last = exc
        if attempt + 1 < attempts:
            time.sleep(min(2.0**attempt, 10.0))
    reason = getattr(last, "reason", None) or last
    raise SourceError(
        f"{url}: download failed after {attempts} attempts: {reason}. Offline? Point --source-path or "
        "IPM_ESCONV_PATH at a local copy of ESConv.json"
    )

"""Helpers of the tests of `ipm view` (tests/test_view.py, tests/test_view_browser.py): the page's data block, the
build's rows to compare it with, and the Chromium the browser tests drive."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow.parquet as pq

CHROMIUM = os.environ.get("IPM_CHROMIUM", "/usr/bin/chromium")
# The flags a closed network needs: no background connections (update checks, sync), no QUIC, no sandbox as root.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions"]


def page_data(html: str) -> dict:
    block = re.search(r'<script type="application/json" id="ipm-data">(.*?)</script>', html, re.S)
    assert block, "no data block"
    return json.loads(block.group(1))


def parquet_rows(build: Path, config: str) -> list[dict]:
    rows = []
    for split in ("train", "validation"):
        path = build / "data" / config / f"{split}-00000-of-00001.parquet"
        if path.is_file():
            rows += [dict(r, split=split) for r in pq.read_table(path).to_pylist()]
    return rows

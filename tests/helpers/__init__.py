"""Helpers of the tests (functions, classes and constants; fixtures live in the conftest.py files): where the shared
data is, how CLI output reads as one line, the arguments of the test builds, a recording fake of the Hub's API.
``helpers.corpora`` and ``helpers.synthetic`` write small invented corpora; ``helpers.<area>`` holds the helpers of
the tests in tests/<area>/ (and ``helpers.view``, ``helpers.trim_tokens`` those of top-level test modules)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[2]  # the repository (tests/helpers/__init__.py)
SHARED = Path(os.environ.get("IPM_SHARED_DIR", ROOT.parent / "shared"))
ESCONV_DIR = SHARED / "data" / "esconv"
ESCONV_JSON = ESCONV_DIR / "ESConv.reconstructed.json"
HUB_DIR = ESCONV_DIR / "hf_thu-coai_esconv"
IPM = [sys.executable, "-m", "ipm_prefdial.cli"]  # the CLI in a process of its own

# Small answer bounds keep the sample build of the tests to a few minutes on two cores; the Hub's split, whose first
# train and validation dialogues have 23 supporter turns (the paper's: 45), halves it again.
PAIR_BUILD_ARGS = ["--source", "esconv", "--source-path", str(ESCONV_JSON), "--split", "hf", "--stage", "all",
                   "--limit", "1",
                   "--sp-max-tokens", "8", "--rg-max-tokens", "40", "--vm-max-tokens", "48",
                   "--judge-max-tokens", "200"]


def parquet(out: Path) -> dict[str, bytes]:
    """A build's parquet files by path under it: what byte-identity checks compare."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted((out / "data").rglob("*.parquet"))}


def plain(text: str) -> str:
    """CLI output as one line of words: rich's error boxes and line wrapping removed."""
    return " ".join(text.translate({ord(c): " " for c in "│╭╮╰╯─"}).split())


def fake_build_args(url: str, *extra: str) -> list[str]:
    """`ipm build --stage all` of the first 2 dialogues per split, policy and judge on the test server."""
    return ["build", "--source", "esconv", "--source-path", str(ESCONV_JSON), "--stage", "all", "--limit", "2",
            "--engine", "openai", "--base-url", url, *extra]


class FakeHub:
    """A recording fake of huggingface_hub.HfApi for `ipm publish` (CI cannot reach the Hub): records every call;
    keeps the tags of each repo like the Hub does."""

    def __init__(self, tags: dict[str, list[str]] | None = None):
        self.calls: list[tuple[str, tuple, dict]] = []
        self.tags = {k: list(v) for k, v in (tags or {}).items()}
        self.uploaded: list[str] = []

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", (repo_id,), kw))
        return f"https://huggingface.co/datasets/{repo_id}"

    def list_repo_refs(self, repo_id, **kw):
        self.calls.append(("list_repo_refs", (repo_id,), kw))
        return SimpleNamespace(tags=[SimpleNamespace(name=t) for t in self.tags.get(repo_id, [])],
                               branches=[SimpleNamespace(name="main")])

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", (), kw))
        root = Path(kw["folder_path"])
        # what allow_patterns selects, the way huggingface_hub matches them (fnmatch on posix paths)
        from fnmatch import fnmatch

        self.uploaded = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
                               and any(fnmatch(p.relative_to(root).as_posix(), pat) for pat in kw["allow_patterns"]))
        self.files = {rel: (root / rel).read_bytes() for rel in self.uploaded}  # what reached the Hub
        return SimpleNamespace(oid="c0ffee" * 6 + "beef")

    def create_tag(self, repo_id, **kw):
        self.calls.append(("create_tag", (repo_id,), kw))
        self.tags.setdefault(repo_id, []).append(kw["tag"])

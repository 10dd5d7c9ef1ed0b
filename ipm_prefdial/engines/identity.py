"""Model identity by content: what the request cache keys and the seeds are derived from.

A name or a path says nothing about the weights behind it: two fine-tunes of one base at one quantisation often
have the same file size, and `ipm train` retrains into the same folder. So a local model is named by the sha256 of
its bytes: a GGUF file, or the weight, adapter, config and tokenizer files of a checkpoint directory. Hashing a
7B model takes a while, so each file's digest is remembered in the request cache database, keyed by its real path
and its stat (size, mtime, ctime, inode): ctime and inode change whenever the bytes can have changed, even when
a copy keeps the old name, size and mtime, so a remembered digest is never stale. A Hub id is named by its
commit (`hub:<repo>@<commit>`) where it is known; an OpenAI-compatible endpoint by the model id it serves (the
project cannot see those weights).

Readable names (rows, cards, the manifest) are separate: a file or folder name and a short digest, never a path.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Protocol

from ipm_prefdial.errors import InputError

# What changes a checkpoint's answers: weights, adapters, configs, tokenizer and chat template. Trainer state,
# logs and READMEs do not.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
CHECKPOINT_FILES = ("config.json", "generation_config.json", "adapter_config.json", "tokenizer.json",
                    "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
                    "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json")
GENERIC_NAMES = frozenset({"sft", "dpo", "model", "merged", "final", "checkpoint", "adapter", "snapshot"})
SHORT = 12  # hex digits of a digest in readable names


class HashMemo(Protocol):
    """Where file digests are remembered (the request cache database)."""

    def remembered_sha256(self, path: str, stamp: str) -> str | None: ...

    def remember_sha256(self, path: str, stamp: str, sha256: str) -> None: ...


def _stamp(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"


def file_sha256(path: str | Path, memo: HashMemo | None = None) -> str:
    """sha256 of a file's bytes, remembered by (real path, stat) in ``memo``."""
    real = os.path.realpath(path)
    stamp = _stamp(os.stat(real))
    if memo is not None:
        known = memo.remembered_sha256(real, stamp)
        if known:
            return known
    digest = hashlib.sha256()
    with open(real, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    value = digest.hexdigest()
    if memo is not None and _stamp(os.stat(real)) == stamp:  # unchanged while we read it
        memo.remember_sha256(real, stamp, value)
    return value


def checkpoint_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and (
        p.suffix in WEIGHT_SUFFIXES or p.name in CHECKPOINT_FILES))


def path_sha256(path: str | Path, memo: HashMemo | None = None) -> str:
    """sha256 of a file, or of a checkpoint directory's relevant files (names and digests)."""
    p = Path(path)
    if p.is_file():
        return file_sha256(p, memo)
    files = checkpoint_files(p)
    if not files:
        raise InputError(f"{p.name}: no weight files (*.safetensors, *.bin, *.gguf) in the model directory")
    listing = [[f.name, file_sha256(f, memo)] for f in files]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def readable_name(path: str | Path, sha256: str | None = None) -> str:
    """A file or folder name a reader recognises, plus a short digest: ``model.gguf@1a2b3c4d5e6f``,
    ``rg/dpo@...`` for a generically named folder (``ipm train``'s ``runs/NAME/rg/dpo``). Never a path."""
    p = Path(os.path.abspath(path))
    name = p.name
    if name.lower() in GENERIC_NAMES and p.parent.name:
        name = f"{p.parent.name}/{name}"
    return f"{name}@{sha256[:SHORT]}" if sha256 else name


def hub_commit(repo_id: str, revision: str | None = None, hub_cache: str | Path | None = None) -> str | None:
    """The commit a Hub model id resolves to, when it is known without a download: a full commit hash given as
    the revision, the local Hugging Face cache's ref, or (online) the Hub's answer."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    if hub_cache is None:
        from huggingface_hub import constants

        hub_cache = constants.HF_HUB_CACHE
    ref = Path(hub_cache) / f"models--{repo_id.replace('/', '--')}" / "refs" / (revision or "main")
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        if re.fullmatch(r"[0-9a-f]{40}", commit):
            return commit
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().model_info(repo_id, revision=revision, timeout=10).sha
    except Exception:  # offline, private, unknown: the commit stays unknown
        return None


def model_identity(model: str, memo: HashMemo | None = None, *, revision: str | None = None,
                   hub_cache: str | Path | None = None) -> tuple[str, str]:
    """(identity, readable name) of a local file or directory (by content) or a Hub id (by commit)."""
    p = Path(model).expanduser()
    if p.exists():
        digest = path_sha256(p, memo)
        return f"sha256:{digest}", readable_name(p, digest)
    commit = hub_commit(model, revision, hub_cache)
    return (f"hub:{model}@{commit}", f"{model}@{commit[:SHORT]}") if commit else (f"hub:{model}", model)

"""``ipm publish``: upload a validated build folder to the Hugging Face Hub as a dataset and tag ``v<version>``.

A version is immutable: publishing a version whose tag already exists on the repo is refused before anything
is uploaded. Users then pin it with ``load_dataset("ORG/NAME", "<config>", revision="v<version>")``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipm_prefdial.errors import InputError
from ipm_prefdial.release.card import render_card
from ipm_prefdial.validate import validate

UPLOADED = ["README.md", "manifest.json", "data/**/*.parquet"]


class PublishError(InputError):
    pass


REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


@dataclass
class Published:
    repo_id: str
    version: str
    tag: str
    commit: str | None
    url: str


def publish(directory: str | Path, repo_id: str, *, private: bool = False, api: Any = None,
            token: str | None = None, allow_incomplete: bool = False) -> Published:
    """Validate ``directory``, create the dataset repo if needed, upload the build, tag it. ``api`` is an
    ``huggingface_hub.HfApi`` (or anything with the same methods; tests pass a recording fake). An incomplete
    build (requests left failed) is refused unless ``allow_incomplete``, which the published card then says."""
    root = Path(directory)
    if not REPO_ID.fullmatch(repo_id):
        raise PublishError(f"--repo-id {repo_id!r}: expected ORG/NAME (letters, digits, '-', '_', '.')")
    report = validate(root)
    if report.incomplete and not allow_incomplete and report.valid_but_incomplete:
        raise PublishError(f"{root}: refused, nothing uploaded: {report.incomplete}; or publish it as it is with "
                           "--allow-incomplete (the card says so)")
    if not report.valid_but_incomplete:
        raise PublishError(f"{root}: not a valid build, nothing uploaded; run `ipm validate {root}`:\n  "
                           + "\n  ".join(report.lines()[:10]))
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    if report.incomplete:
        manifest = {**manifest, "published_incomplete": True}  # the uploaded card says it (the manifest is kept)
    version = manifest["version"]
    tag = f"v{version}"
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        tags = {ref.name for ref in api.list_repo_refs(repo_id, repo_type="dataset").tags}
        if tag in tags:
            raise PublishError(f"{repo_id} already has the tag {tag}: a published version is never replaced; "
                               f"build with --dataset-version <new version>")
        with tempfile.TemporaryDirectory(prefix="ipm-publish-") as tmp:
            staged = _stage(root, manifest, repo_id, Path(tmp))
            info = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(staged),
                                     allow_patterns=UPLOADED, delete_patterns=["data/**"],
                                     commit_message=f"IPM-PrefDial {tag}")
        commit = getattr(info, "oid", None)
        api.create_tag(repo_id, repo_type="dataset", tag=tag, revision=commit,
                       tag_message=f"IPM-PrefDial {version}")
    except PublishError:
        raise
    except Exception as exc:  # the Hub client's errors: no token, no network, refused (many classes)
        words = " ".join(str(exc).split())[:300]
        raise PublishError(f"{repo_id}: the Hub refused the upload or could not be reached ({type(exc).__name__}: "
                           f"{words}); log in with `hf auth login` or set HF_TOKEN, then run it again") from None
    return Published(repo_id, version, tag, commit, str(url))


def _stage(root: Path, manifest: dict, repo_id: str, tmp: Path) -> Path:
    """What is uploaded: the build's manifest and parquet files (hard links where possible), and its card rendered
    again with the repo id, so the card's examples read ``load_dataset("ORG/NAME", ...)``. The local build is
    left as it is."""
    staged = tmp / "build"
    for path in [root / "manifest.json", *sorted((root / "data").rglob("*.parquet"))]:
        target = staged / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:  # another file system
            shutil.copy2(path, target)
    (staged / "README.md").write_text(render_card(manifest, repo_id), encoding="utf-8")
    return staged

"""``ipm publish``: upload a validated build folder to the Hugging Face Hub as a dataset and tag ``v<version>``.

A version is immutable: publishing a version whose tag already exists on the repo is refused before anything
is uploaded. Users then pin it with ``load_dataset("ORG/NAME", "<config>", revision="v<version>")``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ipm_prefdial.release.card import render_card
from ipm_prefdial.validate import validate

UPLOADED = ["README.md", "manifest.json", "data/**/*.parquet"]


class PublishError(RuntimeError):
    pass


@dataclass
class Published:
    repo_id: str
    version: str
    tag: str
    commit: str | None
    url: str


def publish(directory: str | Path, repo_id: str, *, private: bool = False, api: Any = None,
            token: str | None = None) -> Published:
    """Validate ``directory``, create the dataset repo if needed, upload the build, tag it. ``api`` is an
    ``huggingface_hub.HfApi`` (or anything with the same methods; tests pass a recording fake)."""
    root = Path(directory)
    if "/" not in repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"--repo-id {repo_id!r}: expected ORG/NAME")
    report = validate(root)
    if not report.ok:
        raise PublishError(f"{root}: not a valid build, nothing uploaded; run `ipm validate {root}`:\n  "
                           + "\n  ".join(report.lines()[:10]))
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    version = manifest["version"]
    tag = f"v{version}"
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
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

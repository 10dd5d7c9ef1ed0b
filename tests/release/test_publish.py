"""`ipm publish` against a recording fake of huggingface_hub.HfApi (CI cannot reach the Hub)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from helpers import FakeHub
from ipm_prefdial.cli import app
from ipm_prefdial.publish import UPLOADED, PublishError, publish


def test_publish_call_sequence(build_copy):
    hub = FakeHub()
    done = publish(build_copy, "org/ipm-prefdial", private=True, api=hub)
    version = json.loads((build_copy / "manifest.json").read_text())["version"]
    assert [c[0] for c in hub.calls] == ["create_repo", "list_repo_refs", "upload_folder", "create_tag"]
    create, _, upload, tag = hub.calls
    assert create[1] == ("org/ipm-prefdial",)
    assert create[2] == {"repo_type": "dataset", "private": True, "exist_ok": True}
    assert upload[2]["repo_id"] == "org/ipm-prefdial" and upload[2]["repo_type"] == "dataset"
    assert upload[2]["allow_patterns"] == UPLOADED and upload[2]["delete_patterns"] == ["data/**"]
    assert tag[2] == {"repo_type": "dataset", "tag": f"v{version}", "revision": "c0ffee" * 6 + "beef",
                      "tag_message": f"IPM-PrefDial {version}"}
    assert "README.md" in hub.uploaded and "manifest.json" in hub.uploaded and "notes.txt" not in hub.uploaded
    assert sum(p.startswith("data/") for p in hub.uploaded) == len(list((build_copy / "data").rglob("*.parquet")))
    assert done.tag == f"v{version}" and done.url.endswith("org/ipm-prefdial")
    for rel, data in hub.files.items():  # the build's own bytes, but for the card
        if rel != "README.md":
            assert data == (build_copy / rel).read_bytes(), rel


def test_the_published_card_names_the_repo(build_copy):
    local = (build_copy / "README.md").read_text()
    assert 'load_dataset("ipm_prefdial", "strategy_sft")' in local  # the build directory's name
    hub = FakeHub()
    publish(build_copy, "org/ipm-prefdial", api=hub)
    card = hub.files["README.md"].decode()
    assert 'load_dataset("org/ipm-prefdial", "strategy_sft")' in card and 'load_dataset("ipm_prefdial"' not in card
    assert (build_copy / "README.md").read_text() == local  # the local card is left as the build wrote it
    assert card.split("\n---\n", 1)[0] == local.split("\n---\n", 1)[0]  # same YAML header


def test_an_existing_version_is_never_replaced(build_copy):
    version = json.loads((build_copy / "manifest.json").read_text())["version"]
    hub = FakeHub(tags={"org/name": [f"v{version}"]})
    with pytest.raises(PublishError, match=f"already has the tag v{version}"):
        publish(build_copy, "org/name", api=hub)
    assert "upload_folder" not in [c[0] for c in hub.calls]


def test_an_invalid_build_is_not_uploaded(build_copy):
    next(iter((build_copy / "data").rglob("*.parquet"))).write_bytes(b"not parquet")
    hub = FakeHub()
    with pytest.raises(PublishError, match="not a valid build, nothing uploaded"):
        publish(build_copy, "org/name", api=hub)
    assert hub.calls == []


@pytest.mark.parametrize("repo_id", ["name-only", "a/b/c", "/name", "org/"])
def test_bad_repo_id(build_copy, repo_id):
    with pytest.raises(PublishError, match="expected ORG/NAME"):
        publish(build_copy, repo_id, api=FakeHub())


def test_cli_uses_the_hub_client(build_copy, monkeypatch):
    hub = FakeHub()
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", lambda token=None: hub)
    result = CliRunner().invoke(app, ["publish", str(build_copy), "--repo-id", "org/cli-test"])
    assert result.exit_code == 0, result.output
    assert "published org/cli-test v" in result.output and 'revision="v' in result.output
    assert [c[0] for c in hub.calls][-1] == "create_tag"
    assert hub.calls[0][2]["private"] is False

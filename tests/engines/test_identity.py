"""Model identity by content: a model that changed is never answered from another model's cache entries, and a
model that did not change is not hashed again."""

from __future__ import annotations

import os
import re
import shutil

from typer.testing import CliRunner

from ipm_prefdial.cli import app
from ipm_prefdial.engines import EngineSpec, make_engine
from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.engines.identity import model_identity


class CountingMemo:
    """A memo that counts what it is asked to remember (a digest computed, not looked up)."""

    def __init__(self, cache: RequestCache):
        self.cache, self.computed = cache, 0

    def remembered_sha256(self, path, stamp):
        return self.cache.remembered_sha256(path, stamp)

    def remember_sha256(self, path, stamp, sha256):
        self.computed += 1
        self.cache.remember_sha256(path, stamp, sha256)


def same_name_size_mtime_other_bytes(path):
    """Overwrite a byte in place, then give the file back its mtime: name, size and mtime all stay."""
    st = os.stat(path)
    with open(path, "r+b") as fh:
        fh.seek(st.st_size - 4096)
        byte = fh.read(1)
        fh.seek(st.st_size - 4096)
        fh.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns) == (st.st_size, st.st_mtime_ns)


def test_a_file_is_named_by_its_bytes_and_hashed_once(tmp_path):
    model = tmp_path / "m" / "tiny.gguf"
    model.parent.mkdir()
    model.write_bytes(b"GGUF" + bytes(range(256)) * 40)
    with RequestCache.in_dir(tmp_path / "cache") as cache:
        memo = CountingMemo(cache)
        first, name = model_identity(str(model), memo)
        assert re.fullmatch(r"sha256:[0-9a-f]{64}", first) and re.fullmatch(r"tiny\.gguf@[0-9a-f]{12}", name)
        assert model_identity(str(model), memo)[0] == first and memo.computed == 1  # remembered, not re-read
        same_name_size_mtime_other_bytes(model)
        second = model_identity(str(model), memo)[0]
        assert second != first and memo.computed == 2
    with RequestCache.in_dir(tmp_path / "cache") as cache:  # remembered across runs, in the cache database
        memo = CountingMemo(cache)
        assert model_identity(str(model), memo)[0] == second and memo.computed == 0


def test_a_checkpoint_directory_is_named_by_its_weights_and_adapter(tmp_path):
    run = tmp_path / "runs" / "x" / "rg" / "dpo"
    run.mkdir(parents=True)
    (run / "adapter_model.safetensors").write_bytes(b"weights-1" * 100)
    (run / "adapter_config.json").write_text('{"r": 8}')
    (run / "trainer_state.json").write_text('{"step": 1}')
    first, name = model_identity(str(run))
    assert name.startswith("rg/dpo@") and "/" + tmp_path.name not in name
    (run / "trainer_state.json").write_text('{"step": 2}')  # not part of the model
    assert model_identity(str(run))[0] == first
    (run / "adapter_config.json").write_text('{"r": 16}')
    assert model_identity(str(run))[0] != first


def test_a_hub_id_is_named_by_its_commit(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    refs = tmp_path / "hub" / "models--Org--Model-7B" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    assert model_identity("Org/Model-7B", hub_cache=tmp_path / "hub") == (
        "hub:Org/Model-7B@0123456789abcdef0123456789abcdef01234567", "Org/Model-7B@0123456789ab")
    assert model_identity("Org/Unknown", hub_cache=tmp_path / "hub") == ("hub:Org/Unknown", "Org/Unknown")


def test_an_endpoint_is_named_by_the_model_it_serves():
    engine = make_engine(EngineSpec("openai", model="Qwen/Qwen2.5-7B-Instruct", base_url="http://127.0.0.1:9/v1"))
    assert engine.identify() == "served:Qwen/Qwen2.5-7B-Instruct"


def test_a_replaced_gguf_with_the_same_name_size_and_mtime_is_asked_again(tmp_path, smollm2):
    """The real embedded engine: a GGUF replaced by different bytes under the same name, size and mtime must not
    meet the answers of the file it replaced; an unchanged one is answered from the cache."""
    model = tmp_path / "models" / smollm2.name
    model.parent.mkdir()
    shutil.copy2(smollm2, model)
    args = ["engine-check", "--model", str(model), "--requests", "3", "--max-tokens", "8", "--concurrency", "1",
            "--cache-dir", str(tmp_path / "cache")]

    def sent() -> int:
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert str(tmp_path) not in result.output.replace("\n", "")  # the model is named, not its path
        return int(re.search(r"│ sent\s+│ (\d+)", result.output).group(1))

    assert sent() == 3
    assert sent() == 0
    same_name_size_mtime_other_bytes(model)
    assert sent() == 3
    assert sent() == 0

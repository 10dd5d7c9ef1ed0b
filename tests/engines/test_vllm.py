"""vLLM for real, on its CPU build (make test-vllm runs these in .venv-vllm): a whole build with vLLM as policy
and judge, killed and resumed; SP, RG and VM adapters from one vLLM instance; `--engine openai` against
`vllm serve`. Every vLLM here serves SmolLM2-135M-Instruct, dequantised once from the bundled GGUF."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import IPM
from ipm_prefdial.cli import app
from ipm_prefdial.engines.vllm_engine import cpu_dtype
from ipm_prefdial.validate import validate

pytestmark = pytest.mark.vllm
ENGINE_STARTS = "Initializing a V1 LLM engine"  # what vLLM logs once per engine start


def cache_with(models: Path, path: Path) -> Path:
    """A fresh request cache that shares the session's dequantised model."""
    path.mkdir(parents=True)
    (path / "models").symlink_to(models, target_is_directory=True)
    return path


def ipm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([*IPM, *args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


def accounting(m: dict) -> list[dict]:
    return [t["accounting"] for t in m["mining"].values()] + [j["accounting"] for j in (m["judge"] or {}).values()]


def committed(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return sum(con.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("answers", "failures"))
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_a_killed_vllm_build_resumes_sends_only_what_is_missing_and_leaves_no_process(models, long_turn_corpus,
                                                                                       tmp_path):
    import psutil

    cache, out = cache_with(models, tmp_path / "cache"), tmp_path / "ds"
    # (no tokenizer counts prompt lengths for the card: seconds of each of the three new processes)
    args = ["build", "--stage", "all", "--engine", "vllm", *long_turn_corpus, "--trim-tokenizer", "none",
            "--cache-dir", str(cache), "--out", str(out)]
    log = (tmp_path / "killed.log").open("w")
    child = subprocess.Popen([*IPM, *args], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while committed(cache / "requests.sqlite") < 4:  # answers are committed while the build runs
            assert child.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no answers within 300 s"
            time.sleep(0.2)
        tree = [p for p in psutil.Process(child.pid).children(recursive=True)]
        assert any("VLLM" in " ".join(p.cmdline() + [p.name()]) or "EngineCore" in p.name() for p in tree), \
            [p.name() for p in tree]
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        log.close()
    gone, alive = psutil.wait_procs(tree, timeout=20)
    assert not alive, f"processes outlived the killed build: {[(p.pid, p.name()) for p in alive]}"
    before = committed(cache / "requests.sqlite")

    ipm(*args)  # the rerun: every answer it did not have, and nothing else
    m = manifest(out)
    sent = sum(a["sent"] for a in accounting(m))
    # each request sent added a row: none of the answers committed before the kill was asked again
    assert committed(cache / "requests.sqlite") == before + sent and before > 0 and sent > 0
    assert sum(a["cache_hits"] + a["replayed_failures"] for a in accounting(m)) >= before
    for a in accounting(m):
        assert a["requests"] == a["cache_hits"] + a["replayed_failures"] + a["sent"] + a["merged"]
    report = validate(out)
    assert report.ok, report.lines()
    assert set(m["judge_status"]["response_pairs"]) <= {"judged", "failed:truncated", "failed:invalid_output"}
    assert m["judge_status"]["response_pairs"].get("judged", 0) > 0
    first = files(out)

    third = ipm(*args)  # nothing to send: vLLM is not even started
    m = manifest(out)
    assert all(a["sent"] == 0 for a in accounting(m))
    assert {d["engine_starts"] for d in m["models"].values()} == {0}
    assert ENGINE_STARTS not in third.stdout + third.stderr
    assert files(out) == first  # identical parquet files and card


def make_adapter(base: str, root: Path, seed: int) -> Path:
    """What `ipm train` exports for a model (SFT then DPO as one adapter on the base), from random LoRA weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ipm_prefdial.training.adapters import export_final_adapter

    torch.manual_seed(seed)

    def lora():
        return LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                          init_lora_weights=False, task_type="CAUSAL_LM")

    sft = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), lora())
    sft.save_pretrained(root / "sft-lora")
    sft.merge_and_unload().save_pretrained(root / "sft")
    AutoTokenizer.from_pretrained(base).save_pretrained(root / "sft")
    get_peft_model(AutoModelForCausalLM.from_pretrained(root / "sft", dtype=torch.float32), lora()).save_pretrained(
        root / "dpo")
    final = export_final_adapter(base, root / "sft-lora", root / "dpo", root / "final", sft_merged=root / "sft")
    assert final["rank"] == 16 and final["max_abs_logit_diff"] < 1e-3
    return root / "final"


def test_sp_rg_and_vm_adapters_are_served_by_one_vllm_instance(models, corpus, tmp_path):
    base = str(next(models.iterdir()))
    adapters = {task: make_adapter(base, tmp_path / "runs" / task, seed) for seed, task in enumerate(("sp", "rg",
                                                                                                        "vm"))}
    cache, out = cache_with(models, tmp_path / "cache"), tmp_path / "ds"
    models_of = [arg for task in ("sp", "rg", "vm") for arg in (f"--{task}-model", str(adapters[task]))]
    result = ipm("build", "--stage", "all", "--no-judge", "--engine", "vllm", *corpus, *models_of,
                 "--trim-tokenizer", "none", "--cache-dir", str(cache), "--out", str(out))
    logged = result.stdout + result.stderr
    assert logged.count(ENGINE_STARTS) == 1, logged[-3000:]  # one vLLM instance for the three models
    m = manifest(out)
    tasks = [m["models"][t] for t in ("sp", "rg", "vm")]
    assert all(d["lora"] and d["engine_starts"] == 1 for d in tasks)
    assert len({d["identity"] for d in tasks}) == 3  # three models, three cache identities
    assert all(a["sent"] > 0 for a in accounting(m))
    report = validate(out)
    assert report.ok, report.lines()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_openai_engine_against_vllm_serve(models, corpus, tmp_path):
    base = str(next(models.iterdir()))
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    # on a CPU as our engine runs it: its dtype, and every prompt prefilled in one step
    server = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", base,
                               "--port", str(port), "--host", "127.0.0.1", "--dtype", cpu_dtype(),
                               "--max-model-len", "4096", "--no-enable-chunked-prefill",
                               "--max-num-batched-tokens", "4096", "--gpu-memory-utilization", "0.3",
                               "--enforce-eager"],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                              env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"})
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "vllm serve did not come up within 300 s"
            try:
                if urllib.request.urlopen(url + "/models", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(1)
        cache, out = cache_with(models, tmp_path / "cache"), tmp_path / "ds"
        result = CliRunner().invoke(app, ["build", "--stage", "all", "--engine", "openai", "--base-url", url, *corpus,
                                          "--trim-tokenizer", "none", "--cache-dir", str(cache), "--out", str(out)])
        assert result.exit_code == 0, result.output
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()
    m = manifest(out)
    assert m["models"]["rg"]["structured"] == "vllm"  # detected from /models: vLLM's structured_outputs
    assert all(a["sent"] > 0 for a in accounting(m))
    assert m["judge_status"]["response_pairs"].get("judged", 0) > 0
    report = validate(out)
    assert report.ok, report.lines()


def test_batch_files_round_trip_through_vllm_run_batch(models, corpus, tmp_path):
    """--batch-export writes the policy's requests as batch lines (nothing sent: no endpoint exists), the real
    `vllm run-batch` answers them, `ipm batches import` reads its output into the cache, and the same command then
    completes the build from the cache alone (the ipm commands run in this process: only vLLM needs its own)."""
    base = str(next(models.iterdir()))
    cache, out, files = cache_with(models, tmp_path / "cache"), tmp_path / "ds", tmp_path / "batches"
    build = ["build", "--stage", "all", "--no-judge", "--engine", "openai", "--base-url", "http://127.0.0.1:9/v1",
             "--model", base, *corpus, "--trim-tokenizer", "none", "--cache-dir", str(cache), "--out", str(out),
             "--batch-export", str(files)]
    first = CliRunner().invoke(app, build)
    assert first.exit_code == 3, first.output
    [policy] = sorted(files.glob("*.jsonl"))
    sent = [json.loads(line) for line in policy.read_text().splitlines()]
    output = tmp_path / "output.jsonl"
    run = subprocess.run([sys.executable, "-m", "vllm.entrypoints.openai.run_batch", "-i", str(policy), "-o",
                          str(output), "--model", base, "--dtype", cpu_dtype(), "--max-model-len", "4096",
                          "--no-enable-chunked-prefill", "--max-num-batched-tokens", "4096", "--enforce-eager",
                          "--gpu-memory-utilization", "0.3"], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"})
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-5000:]
    answers = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(a["custom_id"] for a in answers) == sorted(s["custom_id"] for s in sent)
    imported = CliRunner().invoke(app, ["batches", "import", str(output), "--cache-dir", str(cache)])
    words = " ".join(imported.output.split())
    assert imported.exit_code == 0 and "; 0 lines without an answer" in words, words
    final = CliRunner().invoke(app, build)
    assert final.exit_code == 0, final.output
    m = manifest(out)
    assert m["complete"] is True and all(a["sent"] == 0 and a["requests"] > 0 for a in accounting(m))
    report = validate(out)
    assert report.ok, report.lines()

"""vLLM settings and adapters without vLLM: what reaches AsyncEngineArgs, the dtype a CPU gets, and which models
share an instance."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ipm_prefdial.cli import app
from ipm_prefdial.config import BuildConfig
from ipm_prefdial.engines import vllm_engine
from ipm_prefdial.engines.vllm_engine import VLLMEngine, cpu_flags, native_dtype
from ipm_prefdial.errors import ConfigError
from ipm_prefdial.options import parse_settings

AVX2_EPYC = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr sse sse2 ht syscall nx mmxext lm avx f16c avx2 bmi2"
AVX512_BF16 = AVX2_EPYC + " avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16 avx512_vbmi2"
SAPPHIRE_RAPIDS = AVX2_EPYC + " avx512f avx512_vnni amx_bf16 amx_tile amx_int8"
GRAVITON3 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm sve i8mm bf16 svebf16"


def adapter(path, base: str, r: int):
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base, "r": r}))
    return str(path)


def test_yaml_mapping_and_command_line_reach_the_engine(tmp_path, monkeypatch):
    seen = {}

    def capture(cfg, console=None):  # stands in for the build: only the config is looked at
        seen["cfg"] = cfg
        raise RuntimeError("captured")

    monkeypatch.setattr("ipm_prefdial.build.build", capture)
    config = tmp_path / "build.yaml"
    config.write_text("engine: vllm\nvllm:\n  max_num_seqs: 8\n  enforce_eager: false\n  dtype: float16\n")
    result = CliRunner().invoke(app, ["build", "--config", str(config), "--vllm-arg", "max_num_seqs=16",
                                      "--vllm-arg", "tensor_parallel_size=2", "--vllm-arg", "kv_cache_dtype=fp8"])
    assert result.exit_code == 1 and "captured" in result.output
    cfg = seen["cfg"]
    assert cfg.vllm == {"max_num_seqs": 16, "enforce_eager": False, "dtype": "float16", "tensor_parallel_size": 2,
                        "kv_cache_dtype": "fp8"}  # the command line wins, values read as YAML scalars
    engine = VLLMEngine("Org/Base-7B", **cfg.vllm)
    cpu, gpu = engine.runtime.settings(gpu=False), engine.runtime.settings(gpu=True)
    assert cpu["max_num_seqs"] == 16 and cpu["enforce_eager"] is False and cpu["tensor_parallel_size"] == 2
    assert cpu["gpu_memory_utilization"] == 0.30 and gpu["gpu_memory_utilization"] == 0.90  # the share of RAM on CPU
    assert cpu["enable_prefix_caching"] is True and cpu["max_model_len"] == 8192
    assert cpu["structured_outputs_config"] == {"backend": "guidance", "disable_any_whitespace": True}
    assert engine.concurrency == 16  # as many streams as vLLM runs sequences
    assert "enable_lora" not in cpu


def test_bad_settings_are_named():
    with pytest.raises(ConfigError, match="--vllm-arg 'max_num_seqs': expected KEY=VALUE"):
        parse_settings(["max_num_seqs"], "--vllm-arg")
    assert parse_settings(["max-num-seqs=4", "enforce_eager=true", "quantization=awq"], "--vllm-arg") == {
        "max_num_seqs": 4, "enforce_eager": True, "quantization": "awq"}
    with pytest.raises(ConfigError, match="vllm: expected a mapping"):
        BuildConfig(vllm=["max_num_seqs", 4]).check()


def test_adapters_of_one_base_share_one_instance(tmp_path):
    sp = adapter(tmp_path / "sp", "Org/Base-7B", 16)
    rg = adapter(tmp_path / "rg", "Org/Base-7B", 32)
    vm = adapter(tmp_path / "vm", "Org/Other-7B", 8)
    engines = VLLMEngine.group({"sp": sp, "rg": rg, "vm": vm, "judge": "Org/Base-7B"})
    assert engines["sp"].runtime is engines["rg"].runtime is engines["judge"].runtime
    assert engines["vm"].runtime is not engines["sp"].runtime  # another base: another instance, started later
    assert (engines["sp"].lora, engines["rg"].lora, engines["judge"].lora) == (sp, rg, None)
    settings = engines["sp"].runtime.settings(gpu=True)
    assert settings["enable_lora"] is True and settings["max_loras"] == 2 and settings["max_lora_rank"] == 32
    assert engines["vm"].runtime.settings(gpu=True)["max_lora_rank"] == 8
    assert engines["sp"].host() is engines["rg"].host() is not engines["vm"].host()
    lora = engines["rg"].runtime.adapters
    assert lora == [sp, rg]


def test_the_cpu_dtype_is_bfloat16_only_where_the_processor_computes_it():
    assert native_dtype(AVX2_EPYC, "x86_64") == "float32"  # bf16 would be emulated
    assert native_dtype(AVX512_BF16, "x86_64") == "bfloat16"
    assert native_dtype(SAPPHIRE_RAPIDS, "x86_64") == "bfloat16"
    assert native_dtype(AVX2_EPYC + " avx512f avx512bw avx512_vnni", "x86_64") == "float32"  # AVX-512, no bf16
    assert native_dtype(GRAVITON3, "aarch64") == "bfloat16"
    assert native_dtype(GRAVITON3, "arm64") == "bfloat16"
    assert native_dtype("fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid", "aarch64") == "float32"
    assert native_dtype(AVX512_BF16, "ppc64le") == "float32"  # another architecture's words mean nothing here
    assert native_dtype("", "x86_64") == "float32"


def test_the_flags_are_read_from_cpuinfo():
    x86 = f"processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: {AVX512_BF16}\n\n" \
          f"processor\t: 1\nflags\t\t: {AVX2_EPYC}\n"
    assert cpu_flags(x86) == AVX512_BF16  # the first processor's
    arm = f"processor\t: 0\nBogoMIPS\t: 2100.00\nFeatures\t: {GRAVITON3}\nCPU implementer\t: 0x41\n"
    assert cpu_flags(arm) == GRAVITON3
    assert cpu_flags("") == ""


def test_the_users_dtype_wins_and_the_manifest_records_the_dtype(tmp_path, monkeypatch):
    monkeypatch.setattr(vllm_engine, "cpu_dtype", lambda: "float32")
    monkeypatch.setattr(vllm_engine, "on_gpu", lambda: False)
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text("{}")
    assert VLLMEngine(str(model)).runtime.settings(gpu=False)["dtype"] == "float32"
    assert VLLMEngine(str(model)).runtime.settings(gpu=True)["dtype"] == "auto"
    engine = VLLMEngine(str(model), dtype="bfloat16")  # --vllm-arg dtype=bfloat16
    assert engine.runtime.settings(gpu=False)["dtype"] == "bfloat16"
    assert engine.describe()["dtype"] == "bfloat16"
    engine.runtime.resolved_dtype = "float16"  # what vLLM made of it, once started
    assert engine.describe()["dtype"] == "float16"


def test_what_reaches_async_engine_args_on_a_cpu(monkeypatch):
    """No chunked prefill on a CPU (a seeded request whose prefill is split kills vLLM's CPU build) and a step that
    holds the longest prompt; a GPU keeps vLLM's own scheduling; the user's settings win."""
    monkeypatch.setattr(vllm_engine, "cpu_dtype", lambda: "float32")
    assert VLLMEngine("Org/Base-7B").runtime.settings(gpu=False) == {
        "dtype": "float32", "gpu_memory_utilization": 0.30, "enforce_eager": True, "max_num_seqs": 32,
        "enable_chunked_prefill": False, "max_num_batched_tokens": 8192, "max_model_len": 8192,
        "enable_prefix_caching": True, "disable_log_stats": True,
        "structured_outputs_config": {"backend": "guidance", "disable_any_whitespace": True}}
    short = VLLMEngine("Org/Base-7B", max_model_len=4096).runtime.settings(gpu=False)
    assert (short["enable_chunked_prefill"], short["max_num_batched_tokens"]) == (False, 4096)
    gpu = VLLMEngine("Org/Base-7B").runtime.settings(gpu=True)
    assert "enable_chunked_prefill" not in gpu and "max_num_batched_tokens" not in gpu
    chosen = VLLMEngine("Org/Base-7B", enable_chunked_prefill=True, max_num_batched_tokens=2048)
    assert {k: chosen.runtime.settings(gpu=False)[k] for k in ("enable_chunked_prefill", "max_num_batched_tokens")
            } == {"enable_chunked_prefill": True, "max_num_batched_tokens": 2048}

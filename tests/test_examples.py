"""The cluster examples run as written: the Slurm script against stub `srun`, `ray` and `ipm` commands (the calls
it makes are checked), the KubeRay manifest parsed, and every `ipm` option either names is a real option."""

from __future__ import annotations

import shlex
import socket
import subprocess
from pathlib import Path

import typer
import yaml

from ipm_prefdial.cli import app

ROOT = Path(__file__).resolve().parents[1]
SBATCH = ROOT / "examples" / "slurm" / "ipm-build-ray.sbatch"
RAYJOB = ROOT / "examples" / "kubernetes" / "ipm-build-rayjob.yaml"
DOCKERFILE = ROOT / "examples" / "kubernetes" / "Dockerfile"

# each stub writes its name and arguments, tab-separated, to $STUB_LOG; srun then runs the command it was given
STUB = """#!/usr/bin/env bash
line=$(basename "$0"); for a in "$@"; do line+=$'\\t'"$a"; done
printf '%s\\n' "$line" >> "$STUB_LOG"  # one write: the background job step's calls do not interleave
"""
SRUN = STUB + """while [[ $# -gt 0 && $1 == -* ]]; do shift; done
exec "$@"
"""
IPM = STUB + """[[ $1 == build && -n ${STUB_FAIL:-} ]] && exit 3
if [[ $1 == build ]]; then  # a build lasts until the other nodes have joined (the job step ran `ray start`)
  for _ in $(seq 100); do grep -q $'^ray\\tstart\\t--address' "$STUB_LOG" && break; sleep 0.05; done
fi
exit 0
"""


def run_sbatch(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", SRUN), ("ray", STUB + "exit 0\n"), ("ipm", IPM)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.tsv"
    log.unlink(missing_ok=True)
    full_env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "STUB_LOG": str(log), "HOME": str(tmp_path),
                "HEAD_IP": "10.1.2.3", **env}
    result = subprocess.run(["bash", str(SBATCH), *args], cwd=tmp_path, env=full_env, capture_output=True, text=True,
                            timeout=60)
    calls = [line.split("\t") for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def build_options() -> set[str]:
    command = typer.main.get_command(app).commands["build"]
    return {opt for param in command.params for opt in param.opts}


def test_the_slurm_script_starts_ray_on_every_node_and_builds_with_one_vllm_worker_per_gpu(tmp_path):
    env = {"SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "4", "SLURM_CPUS_PER_TASK": "32"}
    result, calls = run_sbatch(tmp_path, env, "--model", "Qwen/Qwen2.5-7B-Instruct", "--limit", "5")
    assert result.returncode == 0, result.stderr
    host = socket.gethostname()
    assert calls[0] == ["ray", "start", "--head", "--node-ip-address=10.1.2.3", "--port=6379", "--num-cpus=32",
                        "--num-gpus=4", "--disable-usage-stats"]
    worker_step = ["srun", "--nodes=1", "--ntasks=1", f"--exclude={host}", "ray", "start",
                   "--address=10.1.2.3:6379", "--num-cpus=32", "--num-gpus=4", "--block"]
    assert worker_step in calls and worker_step[4:] in calls  # the job step, and what it ran on the other node
    build = ["ipm", "build", "--executor", "ray", "--ray-address", "10.1.2.3:6379", "--workers", "8",
             "--worker-gpus", "1", "--worker-cpus", "7", "--engine", "vllm", "--stage", "all", "--out", "ipm_prefdial",
             "--cache-dir", f"{tmp_path}/.ipm-cache", "--model", "Qwen/Qwen2.5-7B-Instruct", "--limit", "5"]
    assert build in calls
    assert calls.index(build) < calls.index(["ipm", "validate", "ipm_prefdial"]) < calls.index(["ray", "stop",
                                                                                                "--force"])
    assert {a for a in build[2:] if a.startswith("--")} <= build_options()


def test_the_slurm_script_runs_a_70b_policy_tensor_parallel_inside_each_worker(tmp_path):
    env = {"SLURM_JOB_NUM_NODES": "4", "SLURM_GPUS_ON_NODE": "8", "SLURM_CPUS_PER_TASK": "64",
           "GPUS_PER_WORKER": "4"}
    result, calls = run_sbatch(tmp_path, env, "--model", "meta-llama/Llama-3.1-70B-Instruct")
    assert result.returncode == 0, result.stderr
    assert calls.count(["ray", "start", "--address=10.1.2.3:6379", "--num-cpus=64", "--num-gpus=8", "--block"]) == 1
    build = next(c for c in calls if c[:2] == ["ipm", "build"])
    text = " ".join(build)
    assert "--workers 8 --worker-gpus 4 --worker-cpus 31 " in text
    assert "--vllm-arg tensor_parallel_size=4 --vllm-arg distributed_executor_backend=mp" in text


def test_the_slurm_script_refuses_a_worker_size_that_splits_a_node_and_stops_ray_when_the_build_fails(tmp_path):
    env = {"SLURM_JOB_NUM_NODES": "1", "SLURM_GPUS_ON_NODE": "4", "GPUS_PER_WORKER": "3"}
    result, calls = run_sbatch(tmp_path, env)
    assert result.returncode == 2 and "GPUS_PER_WORKER=3 does not divide the 4 GPUs" in result.stderr
    assert calls == []
    result, calls = run_sbatch(tmp_path, {"SLURM_JOB_NUM_NODES": "1", "SLURM_GPUS_ON_NODE": "2", "STUB_FAIL": "1"})
    assert result.returncode == 3
    assert [c[0] for c in calls] == ["ray", "ipm", "ray"] and calls[-1] == ["ray", "stop", "--force"]
    assert not any(c[0] == "srun" for c in calls)  # one node: no worker step


def test_the_kuberay_manifest_names_the_image_the_command_and_the_resources():
    docs = list(yaml.safe_load_all(RAYJOB.read_text()))
    job = next(d for d in docs if d["kind"] == "RayJob")
    assert job["apiVersion"] == "ray.io/v1"
    cluster = job["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    [worker_group] = cluster["workerGroupSpecs"]
    worker = worker_group["template"]["spec"]
    images = {head["containers"][0]["image"], worker["containers"][0]["image"]}
    assert images == {"registry.example.org/ipm-prefdial:0.2.0"}
    assert "registry.example.org/ipm-prefdial:0.2.0" in DOCKERFILE.read_text()  # how to build it
    assert DOCKERFILE.read_text().splitlines()[4].startswith("FROM vllm/vllm-openai:")
    commands = [shlex.split(part) for part in job["spec"]["entrypoint"].split("&&")]
    build, check = commands
    assert build[:4] == ["ipm", "build", "--executor", "ray"] and check[:2] == ["ipm", "validate"]
    assert {a for a in build[2:] if a.startswith("--")} <= build_options()
    option = dict(zip(build[2::2], build[3::2], strict=False))
    # the workers fit the worker pods: --workers x --worker-gpus GPUs, --worker-cpus CPUs each
    limits = worker["containers"][0]["resources"]["limits"]
    pods = worker_group["replicas"]
    assert int(option["--workers"]) * float(option["--worker-gpus"]) <= pods * int(limits["nvidia.com/gpu"])
    assert int(option["--workers"]) * float(option["--worker-cpus"]) <= pods * int(limits["cpu"]) - 1
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no engine on the head
    # the driver (on the head) alone writes the cache and the dataset: both on the head's volume
    [mount] = head["containers"][0]["volumeMounts"]
    assert option["--out"].startswith(mount["mountPath"] + "/") and option["--cache-dir"].startswith(
        mount["mountPath"] + "/")
    claim = next(v for v in head["volumes"] if v["name"] == mount["name"])["persistentVolumeClaim"]["claimName"]
    assert any(d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == claim for d in docs)


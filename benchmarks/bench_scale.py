"""Benchmark: `ipm build` scaled out with `--executor ray`, against the suite's deterministic test server
(ipm_prefdial/testing/fake_llm.py, its own process), so what is measured is the project's work, not a model's.

(a) Scaling: the mining and judge requests of the first 20 dialogues per split, each answered after 100 ms, 4
    requests in flight per worker: the local executor (4 in flight), then Ray with 1, 2 and 4 workers. Prints
    requests/s while answering (first to last answer in the server's log), the ratio to the ideal (workers x 4 /
    0.1 s) and the end-to-end wall time (start-up and conversion included). Goal: 4 workers >= 3x one worker.
(b) Driver cost: the full ESConv request set (82,920 requests) with no latency, with each executor: requests/s,
    CPU seconds per request of every process of ours (the `ipm` driver, the Ray workers, raylet, GCS and Ray's
    other processes; not the test server), the driver's peak RSS and the peak RSS of all of ours together.
    Goal: <= 1 ms of driver CPU per request and <= 1 GB peak, with either executor. Then a profile of the driver
    (cProfile, on a --limit 40 build, so the profile's own overhead does not touch the figures above).

(transport) The same full build with the HTTP engine's POST through the openai SDK (``openai[aiohttp]``) instead of
    our aiohttp client: the driver's CPU per request of each.

    IPM_ESCONV_PATH=../shared/data/esconv/ESConv.reconstructed.json \
        python benchmarks/bench_scale.py [a|b|transport|profile]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
LATENCY = 0.1
PER_WORKER = 4

# `--driver OUT.json -- ARGS`: run `ipm ARGS` in this process and write its own CPU time and peak RSS at exit
DRIVER = """
import atexit, json, os, resource, sys
out = os.environ["IPM_BENCH_RUSAGE"]
def dump():
    r = resource.getrusage(resource.RUSAGE_SELF)
    with open(out, "w") as f:
        json.dump({"cpu_s": r.ru_utime + r.ru_stime, "maxrss_kb": r.ru_maxrss}, f)
atexit.register(dump)
profile = os.environ.get("IPM_BENCH_PROFILE")
if profile:
    import cProfile
    import time
    prof = cProfile.Profile(time.process_time)  # CPU time: waiting in epoll is not the driver's cost
    prof.enable()
    atexit.register(lambda: (prof.disable(), prof.dump_stats(profile)))
if os.environ.get("IPM_BENCH_SDK"):  # the openai SDK as the HTTP engine's transport (benchmarks/sdk_transport.py)
    sys.path.insert(0, os.environ["IPM_BENCH_DIR"])
    import sdk_transport
    sdk_transport.install()
sys.argv = ["ipm", *sys.argv[1:]]
from ipm_prefdial.cli import app
app()
"""


def source() -> str:
    path = os.environ.get("IPM_ESCONV_PATH")
    if not path:
        sys.exit("set IPM_ESCONV_PATH to ESConv.json (e.g. ../shared/data/esconv/ESConv.reconstructed.json)")
    return path


class Server:
    """ipm_prefdial/testing/fake_llm.py in a process of its own (its CPU is not ours)."""

    def __init__(self, log: Path, latency: float):
        self.log = log
        self.proc = subprocess.Popen([sys.executable, "-m", "ipm_prefdial.testing.fake_llm", "--log", str(log),
                                      "--latency", str(latency)],
                                     stdout=subprocess.PIPE, text=True)
        self.url = self.proc.stdout.readline().strip()

    def answer_times(self) -> list[float]:
        return [json.loads(line)["t"] for line in self.log.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def role(proc: psutil.Process) -> str:
    """What a process of ours is: by its executable's name (raylet, gcs_server) or Ray's process title."""
    try:
        name, cmdline = proc.name(), proc.cmdline()
    except psutil.Error:
        return "gone"
    title = cmdline[0] if cmdline else name
    if "build-child" in cmdline:  # a Ray build's driver: `ipm build` runs it in a child that it watches
        return "driver"
    if name == "raylet" or title.endswith("/raylet"):
        return "raylet"
    if name == "gcs_server" or title.endswith("/gcs_server"):
        return "ray gcs"
    if title.startswith("ray::EngineWorker"):
        return "ray workers"
    if title.startswith("ray::IDLE") or "default_worker.py" in " ".join(cmdline):
        return "ray idle"  # a worker not yet given an actor: looked at again at the next sample
    return "ray other"


class Sampler(threading.Thread):
    """Every 0.25 s: CPU seconds and RSS of every descendant of the driver (last value seen per process) and the
    peak RSS of the driver and its descendants together."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.cpu: dict[int, tuple[str, float]] = {}
        self.peak: dict[str, int] = {}  # peak RSS by role
        self.peak_total = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            total = 0
            try:
                total += self.root.memory_info().rss
                children = self.root.children(recursive=True)
            except psutil.Error:
                break
            for p in children:
                try:
                    t = p.cpu_times()
                    total += p.memory_info().rss
                    known = self.cpu.get(p.pid, ("ray idle", 0.0))[0]
                    self.cpu[p.pid] = (role(p) if known == "ray idle" else known, t.user + t.system)
                    self.peak[self.cpu[p.pid][0]] = max(self.peak.get(self.cpu[p.pid][0], 0), p.memory_info().rss)
                except psutil.Error:
                    pass
            self.peak_total = max(self.peak_total, total)
            self.done.wait(0.25)

    def by_role(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, seconds in self.cpu.values():
            out[name] = out.get(name, 0.0) + seconds
        return out


def ipm_build(url: str, work: Path, *extra: str, profile: Path | None = None, sdk: bool = False) -> dict:
    rusage = work / "driver.json"
    args = ["build", "--source-path", source(), "--stage", "all", "--engine", "openai", "--base-url", url,
            "--trim-tokenizer", "none", "--out", str(work / "ds"), "--cache-dir", str(work / "cache"), *extra]
    env = {**os.environ, "IPM_BENCH_RUSAGE": str(rusage), **({"IPM_BENCH_PROFILE": str(profile)} if profile else {}),
           **({"IPM_BENCH_SDK": "1", "IPM_BENCH_DIR": str(Path(__file__).parent)} if sdk else {})}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    if proc.returncode:
        sys.exit(f"ipm {' '.join(args)} failed:\n{stderr[-3000:]}")
    manifest = json.loads((work / "ds" / "manifest.json").read_text())
    parts = [*manifest["mining"].values(), *(manifest.get("judge") or {}).values()]
    driver = json.loads(rusage.read_text())
    others = sampler.by_role()
    # a Ray build's driver is `ipm build`'s watched child: its CPU and memory, plus the small watching parent's CPU
    child_cpu, child_peak = others.pop("driver", 0.0), sampler.peak.get("driver", 0) / 2**20
    return {"wall_s": wall, "sent": sum(p["accounting"]["sent"] for p in parts),
            "requests": sum(p["accounting"]["requests"] for p in parts), "driver_cpu_s": driver["cpu_s"] + child_cpu,
            "driver_peak_mb": max(driver["maxrss_kb"] / 1024, child_peak), "others": others,
            "peak_total_mb": sampler.peak_total / 2**20, "stdout": stdout}


def executor_args(workers: int | None, per_worker: int) -> list[str]:
    if workers is None:
        return ["--concurrency", str(per_worker)]
    return ["--executor", "ray", "--workers", str(workers), "--concurrency", str(per_worker)]


def part_a() -> None:
    print(f"(a) first 20 dialogues per split, --stage all, {LATENCY * 1000:.0f} ms per request, {PER_WORKER} in "
          "flight per worker")
    print(f"{'executor':<16}{'requests':>10}{'answering s':>13}{'req/s':>9}{'ideal':>8}{'of ideal':>10}"
          f"{'wall s':>9}")
    rates = {}
    for name, workers in (("local", None), ("ray, 1 worker", 1), ("ray, 2 workers", 2), ("ray, 4 workers", 4)):
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            work = Path(tmp)
            server = Server(work / "answered.jsonl", LATENCY)
            try:
                r = ipm_build(server.url, work, "--limit", "20", *executor_args(workers, PER_WORKER))
                times = server.answer_times()
            finally:
                server.stop()
        span = max(times) - min(times)
        rate = len(times) / span
        ideal = (workers or 1) * PER_WORKER / LATENCY
        rates[name] = rate
        print(f"{name:<16}{r['sent']:>10,}{span:>13.1f}{rate:>9.1f}{ideal:>8.0f}{rate / ideal:>10.2f}"
              f"{r['wall_s']:>9.1f}")
    print(f"4 workers / 1 worker: {rates['ray, 4 workers'] / rates['ray, 1 worker']:.2f}x (goal >= 3x)")


def part_b(runs=(("local", ["--concurrency", "64"], False), ("ray, 2 workers", executor_args(2, 32), False))) -> None:
    print("(b) the full ESConv request set, no latency: CPU seconds of our processes per request")
    for name, extra, sdk in runs:
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            work = Path(tmp)
            server = Server(work / "answered.jsonl", 0.0)
            try:
                r = ipm_build(server.url, work, *extra, sdk=sdk)
            finally:
                server.stop()
        n = r["sent"]
        others = ", ".join(f"{k} {v:.1f} CPU-s ({1000 * v / n:.2f} ms/request)" for k, v in sorted(r["others"].items()))
        print(f"{name}: {r['requests']:,} requests, {n:,} sent in {r['wall_s']:.1f} s ({n / r['wall_s']:.0f} "
              f"requests/s end to end)")
        print(f"  driver: {r['driver_cpu_s']:.1f} CPU-s = {1000 * r['driver_cpu_s'] / n:.2f} ms/request (goal <= 1), "
              f"peak RSS {r['driver_peak_mb']:.0f} MB (goal <= 1024)")
        print(f"  others: {others or 'none'}; peak RSS of all of ours together {r['peak_total_mb']:.0f} MB")


def part_transport() -> None:
    """The HTTP engine on aiohttp (ours) against the openai SDK on its aiohttp transport, on the full request set."""
    try:
        import openai  # noqa: F401
    except ImportError:
        print("(transport) skipped: pip install 'openai[aiohttp]' to compare the openai SDK's transport")
        return
    print("(transport) the same build, the HTTP engine's POST through aiohttp (ours) or through the openai SDK:")
    part_b((("local, aiohttp (ours)", ["--concurrency", "64"], False),
            ("local, openai SDK", ["--concurrency", "64"], True)))


def part_profile() -> None:
    import pstats

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        server = Server(work / "answered.jsonl", 0.0)
        try:
            r = ipm_build(server.url, work, "--limit", "40", "--concurrency", "64", profile=work / "driver.prof")
        finally:
            server.stop()
        stats = pstats.Stats(str(work / "driver.prof"))
    areas: dict[str, float] = {}
    for (filename, _, function), (_, _, own, _, _) in stats.stats.items():
        areas[area(filename, function)] = areas.get(area(filename, function), 0.0) + own
    total = sum(areas.values())
    print(f"driver profile (local executor, --limit 40: {r['sent']:,} requests sent; CPU time, inflated by "
          f"cProfile's own overhead): {total:.1f} s in all, {1000 * total / r['sent']:.2f} ms per request sent")
    for name, own in sorted(areas.items(), key=lambda kv: -kv[1])[:14]:
        print(f"  {name:<44}{own:>7.2f} s {100 * own / total:>5.1f}%")
    print("top functions by own time:")
    stats.sort_stats("tottime").print_stats(12)


AREAS = (("/aiohttp/", "HTTP client (aiohttp)"), ("/httpx/", "HTTP client (httpx)"),
         ("/httpcore/", "HTTP client (httpx)"), ("/anyio/", "HTTP client (httpx)"), ("/h11/", "HTTP client (httpx)"),
         ("/multidict/", "HTTP client (aiohttp)"), ("/yarl/", "HTTP client (aiohttp)"),
         ("/asyncio/", "event loop (asyncio)"), ("/json/", "JSON"), ("/sqlite3/", "request cache (sqlite)"),
         ("/rich/", "progress bar (rich)"), ("/pyarrow/", "parquet (pyarrow)"), ("/datasets/", "datasets"),
         ("/jsonschema", "output checks (jsonschema)"), ("/jinja2/", "prompt templates (jinja2)"),
         ("/ipm_prefdial/engines/", "ours: engines, runner, cache"), ("/ipm_prefdial/", "ours: pipeline"),
         ("<frozen importlib", "imports"), ("/site-packages/", "other libraries"))


def area(filename: str, function: str) -> str:
    """Where a profiled function belongs, by its file (C functions by their name)."""
    if filename == "~":
        if "sqlite3" in function:
            return "request cache (sqlite)"
        if "json" in function or "_json" in function:
            return "JSON"
        if "socket" in function or "select" in function or "epoll" in function:
            return "sockets"
        if "sha256" in function or "hashlib" in function:
            return "hashing"
        return "builtins"
    for marker, name in AREAS:
        if marker in filename:
            return name
    return "standard library (other)"


def main() -> None:
    parts = sys.argv[1:] or ["a", "b", "transport", "profile"]
    for part in parts:
        {"a": part_a, "b": part_b, "transport": part_transport, "profile": part_profile}[part]()


if __name__ == "__main__":
    main()

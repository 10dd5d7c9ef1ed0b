"""`ipm view` on the full ESConv build: time to write the page, its size, and time until it is interactive in
headless Chromium. Goals (issue 16): <= 30 s, <= 25 MB, <= 3 s.

The build is `ipm build --source esconv --stage all` of all of ESConv (paper split) with policy and judge on the
deterministic test server (``ipm_prefdial.testing.fake_llm``), about two minutes here; IPM_BENCH_BUILD=DIR reuses a
build.
Run: `make bench-view` (ESConv from IPM_ESCONV_PATH, set by the Makefile from ../shared)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("IPM_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]


def full_build(work: Path) -> Path:
    from ipm_prefdial.testing.fake_llm import FakeLLM

    source = os.environ.get("IPM_ESCONV_PATH")
    if not source:
        sys.exit("set IPM_ESCONV_PATH to ESConv.json (e.g. ../shared/data/esconv/ESConv.reconstructed.json)")
    server = FakeLLM(None).start()
    out = work / "ipm_prefdial"
    started = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "ipm_prefdial.cli", "build", "--source", "esconv",
                               "--source-path", source, "--stage", "all", "--engine", "openai", "--base-url",
                               server.url, "--concurrency", "32", "--out", str(out),
                               "--cache-dir", str(work / "cache")],
                              capture_output=True, text=True, env={**os.environ, "IPM_CACHE_DIR": str(work / "c")})
        if done.returncode != 0:
            sys.exit(f"the build failed (exit {done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    finally:
        server.stop()
    print(f"full ESConv build on the test server: {time.perf_counter() - started:.0f} s")
    return out


def write_page(build: Path, page: Path, *extra: str) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of `ipm view` in a process of its own."""
    started = time.perf_counter()
    proc = psutil.Popen([sys.executable, "-m", "ipm_prefdial.cli", "view", str(build), "-o", str(page), *extra],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    output = proc.stdout.read()
    if proc.returncode != 0:
        sys.exit(f"ipm view failed:\n{output}")
    print("  " + output.strip().replace("\n", " "))
    return seconds, peak / 1e6


def interactive(page: Path, runs: int = 3) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for run in range(runs):
            context = browser.new_context(viewport={"width": 1500, "height": 1000})
            tab = context.new_page()
            started = time.perf_counter()
            tab.goto(page.as_uri())
            tab.wait_for_selector("body[data-ready=true]", timeout=120_000)
            wall = time.perf_counter() - started
            in_page = int(tab.get_attribute("body", "data-ready-ms"))
            started = time.perf_counter()
            tab.select_option("#f-config", "response_pairs")  # the page filters and draws in the change handler
            filtered = time.perf_counter() - started
            started = time.perf_counter()
            tab.fill("#f-q", "walk")
            search = time.perf_counter() - started
            count = tab.get_attribute("#count", "data-count")
            print(f"  run {run + 1}: interactive after {wall:.2f} s (page's own clock {in_page / 1000:.2f} s); "
                  f"config filter {filtered * 1000:.0f} ms; text search {search * 1000:.0f} ms ({count} pairs)")
            context.close()
        browser.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        build = Path(os.environ["IPM_BENCH_BUILD"]) if os.environ.get("IPM_BENCH_BUILD") else full_build(work)
        page = work / "view.html"
        print("ipm view, all pairs:")
        seconds, peak = write_page(build, page)
        size = page.stat().st_size / 1e6
        print(f"  written in {seconds:.1f} s (goal <= 30 s), {size:.1f} MB (goal <= 25 MB), peak memory {peak:.0f} MB")
        if Path(CHROMIUM).is_file():
            interactive(page)
        else:
            print(f"  no Chromium at {CHROMIUM}: time to interactive not measured (make install-chromium)")
        sample = work / "sample.html"
        print("ipm view --sample 500 --annotate:")
        seconds, peak = write_page(build, sample, "--sample", "500", "--annotate")
        print(f"  written in {seconds:.1f} s, {sample.stat().st_size / 1e6:.2f} MB, peak memory {peak:.0f} MB")


if __name__ == "__main__":
    main()

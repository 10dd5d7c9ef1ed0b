"""``ipm build --executor ray`` runs its driver in a child process that this one watches.

Why: when the node's raylet or object store dies, Ray ends the driver process from C++ (``QuickExit``) after
printing a page of its own logs: no Python handler runs, so the build could neither say what happened nor give the
exit code of a lost cluster. The child does the whole build (the request cache is committed answer by answer, so
nothing answered is lost when it is killed); this parent

- passes the config on the child's stdin (header values never reach a command line or a file),
- forwards Ctrl-C and SIGTERM,
- reads the exit code the child writes when it ends by itself, and otherwise (Ray killed it) prints one line:
  what Ray said, how many answers this run committed, and that the same command resumes; exit 75,
- ends the local Ray processes the child started (they outlive a killed driver otherwise).

Ray's own messages to the driver (a dead worker, a dead raylet) go to a log file in the cache directory instead
of the console, and the line names that file.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ipm_prefdial.errors import EXIT_GONE

STATUS_ENV = "IPM_SUPERVISED_STATUS"  # set in the child: where it writes its own exit code
RAY_LOG_ENV = "IPM_RAY_LOG"  # set in the child: where Ray's messages to the driver go


def supervised() -> bool:
    return bool(os.environ.get(STATUS_ENV))


def report_exit(code: int) -> None:
    """In the child: the exit code it chose (any other end is Ray's doing)."""
    path = os.environ.get(STATUS_ENV)
    if path:
        Path(path).write_text(str(code), encoding="utf-8")


def quiet_ray_driver() -> None:
    """In the child: Ray's error messages to the driver (a worker or raylet died, with pages of logs) go to the log
    file named by IPM_RAY_LOG, not the console; the build says in one line what matters. ``print_to_stdstream`` is
    how Ray's listener thread prints them (private; where it is missing, Ray prints as usual)."""
    path = os.environ.get(RAY_LOG_ENV)
    if not path:
        return
    try:
        from ray._private import worker
    except ImportError:
        return
    if not hasattr(worker, "print_to_stdstream"):
        return

    def to_file(data: dict, ignore_prefix: bool = False) -> None:
        with open(path, "a", encoding="utf-8") as fh:
            for line in data.get("lines") or []:
                fh.write(f"({data.get('pid', 'ray')}) {line}\n")

    worker.print_to_stdstream = to_file


def run(config: dict, cache_file: Path | None, log_dir: Path) -> tuple[int, str | None]:
    """Run ``ipm build`` with ``config`` in a child process: (the exit code to end with, the line to print when
    Ray ended the child, else None)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    ray_log = log_dir / f"ray-driver-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with tempfile.TemporaryDirectory(prefix="ipm-build-") as tmp:
        status = Path(tmp) / "exit"
        env = {**os.environ, STATUS_ENV: str(status), RAY_LOG_ENV: str(ray_log)}
        started = time.time()
        signalled: list[int] = []
        child: subprocess.Popen | None = None

        def forward(signum, frame) -> None:  # the child has a session of its own: the terminal's signals are ours
            signalled.append(signum)
            if child is not None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        try:
            child = subprocess.Popen([sys.executable, "-m", "ipm_prefdial.cli", "build-child"], stdin=subprocess.PIPE,
                                     env=env, start_new_session=True)
            with contextlib.suppress(BrokenPipeError):  # a child that died at once says so itself
                child.stdin.write(json.dumps(config).encode("utf-8"))
                child.stdin.close()
            while True:  # the child ended, not yet reaped: its pid, and so its process group, are still its own
                try:
                    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
                    break
                except InterruptedError:
                    continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)  # the local Ray it started: GCS, raylet, agents, workers
            code = child.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if child is not None and child.poll() is None:  # this process is being stopped: so is the build
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
        if status.is_file():
            return int(status.read_text(encoding="utf-8") or 1), None
        if signalled:
            return (130 if signal.SIGINT in signalled else 128 + signalled[-1]), None
    said = _first_words(ray_log) or (f"killed by signal {-code}" if code < 0 else f"exit status {code}")
    kept = _answers_since(cache_file, started)
    kept_text = f"{kept:,} answers of this run are kept in the request cache" if kept is not None else \
        "nothing was cached (--no-cache)"
    return EXIT_GONE, (f"the Ray cluster stopped the build: {said} (Ray's messages: {ray_log}); {kept_text}; run "
                       "the same command again to resume (with --executor local if the cluster is gone)")


def _first_words(log: Path) -> str | None:
    """The first two sentences of what Ray told the driver, if it told it anything ("(raylet) Raylet is terminated.
    Termination is unexpected.")."""
    try:
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                return ". ".join(" ".join(line.split()).split(". ")[:2])[:200].rstrip(".") + "."
    except OSError:
        pass
    return None


def _answers_since(cache_file: Path | None, since: float) -> int | None:
    if cache_file is None:
        return None
    if not cache_file.is_file():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{cache_file}?mode=ro", uri=True, timeout=10)) as db:
            return db.execute("SELECT COUNT(*) FROM answers WHERE created >= ?", (since,)).fetchone()[0]
    except sqlite3.Error:
        return 0

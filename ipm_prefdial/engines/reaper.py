"""A watchdog that takes down what a process started when that process is killed.

vLLM runs its engine core (and workers) in separate processes; when the process that owns them dies by SIGKILL
they are reparented and live on, holding the GPU. ``watch()`` starts this module as a small process of its own
session: while the owner lives it notes the owner's descendants twice a second; once the owner is gone it kills
the ones it noted (checked by start time, so a reused pid is never hit) and exits. When the owner exits
normally it has closed its engines already and the watchdog finds nothing left to do.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_S = 0.5


def _descendants(pid: int) -> dict[int, float]:
    import psutil

    try:
        return {p.pid: p.create_time() for p in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return {}


def _kill(noted: dict[int, float]) -> None:
    import psutil

    for pid, started in noted.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == started:
                proc.send_signal(signal.SIGKILL)
        except psutil.Error:
            pass


def main(owner: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the owner, which then closes its engines
    noted: dict[int, float] = {}
    me = os.getpid()
    while True:
        try:
            os.kill(owner, 0)
            alive = os.getppid() == owner
        except OSError:
            alive = False
        if not alive:
            _kill(noted)
            return
        noted.update({pid: t for pid, t in _descendants(owner).items() if pid != me})
        time.sleep(POLL_S)


def watch() -> subprocess.Popen:
    """Start the watchdog for this process; terminate it when the engines are closed."""
    return subprocess.Popen([sys.executable, "-m", "ipm_prefdial.engines.reaper", str(os.getpid())],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


if __name__ == "__main__":
    main(int(sys.argv[1]))

"""Where the requests of a build are answered: ``local`` (the engine in this process) or ``ray`` (engines in Ray
actors across a cluster). The pipeline does not change: an executor only decides what stands behind the
``Engine`` it is given, and the driver keeps the request cache, the accounting and the output."""

from __future__ import annotations

EXECUTORS = ("local", "ray")

"""When the world fails, a build stops soon and says so: a server that dies mid-build is given up after
--give-up-after (exit 75, every answer kept, the same command resumes), an endpoint that cannot be reached stops it in
seconds with nothing recorded, and requests left failed make the build incomplete everywhere (exit 3, manifest, card,
validate, publish) until a rerun answers them."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from typer.testing import CliRunner

from helpers import IPM, FakeHub, fake_build_args, parquet, plain
from ipm_prefdial.cli import app
from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.testing.fake_llm import FakeLLM, read_log

runner = CliRunner()


def serve(log: Path, port: int = 0) -> tuple[subprocess.Popen, str]:
    """The test server in a process of its own (so that it can be killed), answering in 20 ms."""
    server = subprocess.Popen([sys.executable, "-m", "ipm_prefdial.testing.fake_llm", "--log", str(log),
                               "--latency", "0.02", "--port", str(port)], stdout=subprocess.PIPE, text=True)
    return server, server.stdout.readline().strip()


def test_a_server_killed_mid_build_is_given_up_and_the_same_command_resumes(fake_pairs_build, tmp_path):
    log, out, cache = tmp_path / "answered.jsonl", tmp_path / "ds", tmp_path / "cache"
    server, url = serve(log)
    command = [*IPM, *fake_build_args(url, "--concurrency", "4", "--give-up-after", "3", "--out", str(out),
                                      "--cache-dir", str(cache), "--trim-tokenizer", "none")]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(read_log(log)) < 150:
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()[1][-2000:]
            time.sleep(0.02)
        server.kill()
        server.wait()
        killed_at = time.monotonic()
        _, stderr = child.communicate(timeout=60)
    finally:
        server.kill()
        child.kill()
    assert child.returncode == 75, stderr[-2000:]
    assert time.monotonic() - killed_at < 3 + 30
    line = plain(stderr)
    assert f"error: {url}: no answer for 3 s: the last of " in line and "connection: ClientConnectorError" in line
    assert "no dataset written;" in line and "run the same command again to resume" in line
    assert "Traceback" not in stderr and not (out / "manifest.json").exists()
    given = len(read_log(log))
    with RequestCache.in_dir(cache) as c:
        kept = c.counts()
    # every answer the server gave is in the cache, but those in flight when it died (4 streams); no failure of the
    # outage is recorded as an answer
    assert given - 4 <= kept["answers"] <= given, (given, kept)
    assert f"{kept['answers']} answers of this run are kept in the request cache" in line

    server, again_url = serve(log, port=urlsplit(url).port)  # the server is back, on the same address
    try:
        assert again_url == url
        resumed_at = time.time()
        again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        server.kill()
    assert again.returncode == 0, again.stderr[-2000:]
    assert parquet(out) == parquet(fake_pairs_build["out"])  # as if the server had never died
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] is True and m["incomplete"] is None
    lines = read_log(log)
    before = {x["sha256"] for x in lines[: given - 4]}  # answered before the death, but the last ones in flight
    after = [x["sha256"] for x in lines if x["t"] >= resumed_at]
    assert before and after and not before & set(after)  # nothing answered before the death was asked again


def test_an_unreachable_endpoint_stops_in_seconds_and_records_nothing(tmp_path):
    out, cache = tmp_path / "ds", tmp_path / "cache"
    started = time.monotonic()
    result = subprocess.run([*IPM, *fake_build_args("http://127.0.0.1:9/v1", "--model", "m", "--out", str(out),
                                                    "--cache-dir", str(cache), "--trim-tokenizer", "none")],
                            capture_output=True, text=True, timeout=60)
    assert time.monotonic() - started < 10
    assert result.returncode == 75
    line = plain(result.stderr)
    assert line.startswith("error: http://127.0.0.1:9/v1: unreachable: ClientConnectorError: Cannot connect to host "
                           "127.0.0.1:9"), line
    assert "nothing was sent" in line and "Traceback" not in result.stderr
    with RequestCache.in_dir(cache) as c:
        assert c.counts() == {"answers": 0, "failures": 0}
    assert not out.exists()


def test_requests_left_failed_make_an_incomplete_build_until_a_rerun_answers_them(fake_pairs_build, tmp_path,
                                                                                   monkeypatch):
    """3% of the requests (by content) get HTTP 500 on every attempt: the build is written but incomplete, exit 3;
    validate fails and publish refuses it (unless --allow-incomplete, which the card then says). Healed, the same
    command sends only those requests and the build is complete and identical to one that never failed."""
    out, cache = tmp_path / "ds", tmp_path / "cache"
    server = FakeLLM(fail_percent=3).start()
    try:
        command = [*fake_build_args(server.url, "--retries", "1"), "--out", str(out), "--cache-dir", str(cache)]
        first = runner.invoke(app, command)
        assert first.exit_code == 3, first.output
        failed = server.refused // 2  # two attempts each
        assert failed >= 5, failed
        m = first_m = json.loads((out / "manifest.json").read_text())
        assert m["complete"] is False
        left = m["incomplete"]
        assert left["transient_failures"] == {"server_error": left["requests"]} and left["requests"] >= failed
        assert left["rerun"].startswith("ipm build --source-path ESConv.reconstructed.json --limit 2 --out ds "
                                        "--cache-dir cache --engine openai --base-url http://127.0.0.1:")
        assert left["rerun"].endswith("/v1 --retries 1")
        words = plain(first.output)
        assert f"incomplete: {left['requests']} requests ended in transient failures (server_error " \
               f"{left['requests']})" in words
        card = (out / "README.md").read_text()
        assert f"> **Warning: this build is incomplete.** {left['requests']} of its requests ended in transient " \
               "failures" in card
        assert card.index("Warning: this build is incomplete") < card.index("## Configs")

        check = runner.invoke(app, ["validate", str(out)])
        assert check.exit_code == 1
        assert f"manifest.json: incomplete build: {left['requests']} requests ended in transient failures " \
               f"(server_error {left['requests']}); run the command that made it again to complete it: ipm build " \
               "--source-path ESConv.reconstructed.json" in plain(check.output)

        hub = FakeHub()
        monkeypatch.setattr("huggingface_hub.HfApi", lambda token=None: hub)
        refused = runner.invoke(app, ["publish", str(out), "--repo-id", "org/ipm"])
        assert refused.exit_code == 1 and hub.calls == []
        assert "refused, nothing uploaded: manifest.json: incomplete build" in plain(refused.output)
        assert "--allow-incomplete" in plain(refused.output)
        allowed = runner.invoke(app, ["publish", str(out), "--repo-id", "org/ipm", "--allow-incomplete"])
        assert allowed.exit_code == 0, allowed.output
        assert "> It was published anyway, with `ipm publish --allow-incomplete`." in \
            hub.files["README.md"].decode()

        server.fail_percent = 0  # healed
        again = runner.invoke(app, command)
        assert again.exit_code == 0, again.output
    finally:
        server.stop()
    m = json.loads((out / "manifest.json").read_text())
    assert m["complete"] is True and m["incomplete"] is None
    sent = sum(s["accounting"]["sent"] for s in [*m["mining"].values(), *m["judge"].values()])
    first_sent = sum(s["accounting"]["sent"] for s in [*first_m["mining"].values(), *first_m["judge"].values()])
    assert failed <= sent < first_sent / 4  # the failed requests and the judging of their pairs, nothing else
    assert parquet(out) == parquet(fake_pairs_build["out"])
    assert "incomplete" not in (out / "README.md").read_text()
    assert runner.invoke(app, ["validate", str(out)]).exit_code == 0


def test_an_engine_stop_from_a_ray_worker_comes_out_as_its_one_line():
    """Ray wraps what a worker raises in a RayTaskError that is also an EngineStop but prints the worker's traceback;
    the driver re-raises the plain EngineStop."""
    from ipm_prefdial.engines.breaker import EngineStop
    from ipm_prefdial.executors.ray_executor import _engine_stop

    cause = EngineStop("http://10.0.0.7:8000/v1", "no answer for 120 s", "connection: refused")

    class RayTaskErrorLike(EngineStop):
        def __init__(self):
            super().__init__("x", "y", "z")
            self.cause = cause

        def __str__(self):
            return "ray::EngineWorker.run() (pid=1234)\n  File ...\nTraceback (most recent call last): ..."

    stop = _engine_stop(RayTaskErrorLike())
    assert type(stop) is EngineStop and stop.exit_code == 75
    assert str(stop) == "http://10.0.0.7:8000/v1: no answer for 120 s: connection: refused"
    assert _engine_stop(ValueError("other")) is None

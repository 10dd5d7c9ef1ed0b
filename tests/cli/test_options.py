"""Each option of `ipm build` and `ipm infer` is declared once, on its config field: the command line is made from
the declarations, so a field without an option or an option without a field cannot happen; these tests fail if
the generation ever drops one, and pin the groups `--help` lists them under."""

from __future__ import annotations

import dataclasses

import pytest
import typer
from typer.testing import CliRunner

from helpers import plain
from ipm_prefdial.cli import app
from ipm_prefdial.config import BuildConfig
from ipm_prefdial.errors import ConfigError, InputError
from ipm_prefdial.evaluation.infer import InferConfig
from ipm_prefdial.options import check_options, declared

BUILD_FLAGS = {
    "--source", "--source-path", "--taxonomy", "--split", "--seed", "--limit", "--on-invalid", "--stage", "--out",
    "--dataset-version", "--cache-dir", "--prompts-dir", "--trim-tokens", "--trim-tokenizer", "--no-cache",
    "--retry-failed", "--dry-run", "--engine", "--samples", "--temperature", "--top-p", "--sp-max-tokens",
    "--rg-max-tokens", "--vm-max-tokens", "--base-url", "--model", "--sp-model", "--rg-model", "--vm-model",
    "--concurrency", "--context-tokens", "--retries", "--give-up-after", "--header", "--vllm-arg", "--judge-engine",
    "--judge-base-url", "--judge-model", "--judge-temperature", "--judge-max-tokens", "--judge-header", "--no-judge",
    "--executor", "--workers", "--worker-cpus", "--worker-gpus", "--ray-address",
}


def command(name: str):
    return typer.main.get_command(app).commands[name]


@pytest.mark.parametrize(("name", "cls", "extra"), [("build", BuildConfig, {"config"}), ("infer", InferConfig, set())])
def test_every_field_is_an_option_and_every_option_a_field(name, cls, extra):
    params = {p.name for p in command(name).params if p.name != "help"}
    assert params - extra == {f.name for f in dataclasses.fields(cls)}
    assert all(opt.spec.help for opt in declared(cls))  # every option says what it does


def test_the_options_of_today_keep_their_names_and_judge_temperature_is_one():
    flags = {p.name: p.opts for p in command("build").params}
    assert BUILD_FLAGS <= {opt for opts in flags.values() for opt in opts}  # a new option adds, none is renamed
    assert flags["judge_temperature"] == ["--judge-temperature"]
    assert (flags["headers"], flags["judge_headers"], flags["vllm"]) == (["--header"], ["--judge-header"],
                                                                         ["--vllm-arg"])
    assert flags["give_up_after"] == ["--give-up-after"] and flags["out"] == ["--out"]


def test_build_help_lists_the_options_by_group():
    panels = []
    for p in command("build").params:
        panel = getattr(p, "rich_help_panel", None)
        if panel and panel not in panels:
            panels.append(panel)
    assert panels[:5] == ["Source and split", "Output", "Engines", "Judge", "Executor"]  # a new group may follow
    result = CliRunner().invoke(app, ["build", "--help"], env={"COLUMNS": "200"})
    text = plain(result.output)
    assert "Judge temperature (0: a verdict should not depend on luck). (between 0 and 2)" in text
    assert "Requests in flight per engine (local: slots; transformers: batch size). (between 1 and 4096)" in text


def test_judge_temperature_reaches_the_config_from_the_command_line_and_is_checked(tmp_path, monkeypatch):
    seen = {}

    def capture(cfg, console=None):  # stands in for the build: only the config is looked at
        seen["cfg"] = cfg
        raise InputError("captured")

    monkeypatch.setattr("ipm_prefdial.build.build", capture)
    result = CliRunner().invoke(app, ["build", "--judge-temperature", "0.3", "--stage", "sft", "--out",
                                      str(tmp_path / "b")])
    assert result.exit_code == 1 and "error: captured" in plain(result.output)
    assert seen["cfg"].judge_temperature == 0.3
    result = CliRunner().invoke(app, ["build", "--judge-temperature", "3", "--out", str(tmp_path / "b")])
    assert result.exit_code == 2
    assert "--judge-temperature must be between 0 and 2, not 3.0" in plain(result.output)


def test_a_config_built_in_code_is_checked_like_the_command_line():
    with pytest.raises(ConfigError, match="--workers must be between 1 and 4096, not 0"):
        check_options(BuildConfig(workers=0))
    with pytest.raises(ConfigError, match="--system must be one of decoupled, joint, rg-gold, not 'both'"):
        check_options(InferConfig(system="both"))
    with pytest.raises(ConfigError, match="--top-p must be above 0 and at most 1, not 0"):
        BuildConfig(top_p=0).check()

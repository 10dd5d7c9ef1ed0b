"""One error tree: every error of ours ends a command with its one line and the exit code of its kind; anything
else is a bug and shows its traceback."""

from __future__ import annotations

from typer.testing import CliRunner

from helpers import ESCONV_JSON, plain
from ipm_prefdial.agreement.read import AgreementError
from ipm_prefdial.cli import app
from ipm_prefdial.engines.breaker import EngineStop
from ipm_prefdial.engines.cache import CacheError
from ipm_prefdial.errors import ConfigError, IncompleteError, InputError, IpmError, UsageError
from ipm_prefdial.evaluation.evaluate import PredictionsError
from ipm_prefdial.evaluation.infer import InferError
from ipm_prefdial.executors.ray_executor import RayExecutorError
from ipm_prefdial.prompts import PromptError
from ipm_prefdial.publish import PublishError
from ipm_prefdial.release.exports import ExportError
from ipm_prefdial.sources import SourceError
from ipm_prefdial.taxonomy import TaxonomyError
from ipm_prefdial.tokens import TokenizerError
from ipm_prefdial.training.config import TrainConfigError
from ipm_prefdial.training.data import TrainDataError
from ipm_prefdial.view import ViewError


def test_every_error_of_ours_has_one_base_and_the_exit_code_of_its_kind():
    usage = (ConfigError, TrainConfigError)
    inputs = (SourceError, TaxonomyError, PromptError, TokenizerError, CacheError, PredictionsError, InferError,
              TrainDataError, ViewError, ExportError, AgreementError, PublishError, RayExecutorError)
    assert all(issubclass(c, UsageError) and c.exit_code == 2 for c in usage)
    assert all(issubclass(c, InputError) and c.exit_code == 1 for c in inputs)
    assert IncompleteError.exit_code == 3 and issubclass(IncompleteError, IpmError)
    assert EngineStop("http://h/v1", "refused", "no").exit_code == 75
    assert EngineStop("http://h/v1", "HTTP 401", "bad key", exit_code=1).exit_code == 1
    assert not any(issubclass(c, (ValueError, RuntimeError)) for c in (*usage, *inputs, EngineStop))


def test_an_error_of_ours_is_one_line_without_a_traceback(tmp_path):
    result = CliRunner().invoke(app, ["build", "--source-path", str(tmp_path / "missing.json"), "--stage", "sft",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "missing.json" in result.output


def test_a_bug_shows_its_traceback_and_says_it_is_a_bug(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        return {}["no such key"]  # a bug of ours, deep in the build

    monkeypatch.setattr("ipm_prefdial.build.write_sft", broken)
    result = CliRunner().invoke(app, ["build", "--source-path", str(ESCONV_JSON), "--stage", "sft", "--limit", "1",
                                      "--trim-tokenizer", "none", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.output and "KeyError: 'no such key'" in result.output
    assert "error: this is a bug in ipm_prefdial, not a problem with your input or options" in plain(result.output)
    assert not (tmp_path / "out" / "manifest.json").exists()

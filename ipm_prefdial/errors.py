"""Every error of ours, and the exit code a command ends with when it meets one.

::

    IpmError                    exit 1  the base: the CLI catches it once, prints its one line, exits with its code
    ├── UsageError              exit 2  an option, a combination of options or a config file that cannot work
    │   └── ConfigError, TrainConfigError
    ├── InputError              exit 1  bad input or a failed check: the file, record and field are named
    │   └── SourceError, TaxonomyError, PromptError, TokenizerError, CacheError, PredictionsError, InferError,
    │       TrainDataError, ViewError, ExportError, AgreementError, PublishError, RayExecutorError
    ├── SetupError              exit 1  this machine lacks what a feature needs (an extra, the bundled model)
    ├── IncompleteError         exit 3  the work ended with requests left failed: the same command completes it
    └── EngineStop              exit 75 an engine or cluster went away (answers kept; the same command resumes),
                                exit 1  or it answers but refuses what we send (fix the options)

Anything else that reaches the command line is a bug of ours: its traceback is shown, with one line saying so,
and the command exits 1. Never catch a built-in exception to turn it into one of these unless the cause is the
user's (a file they named that cannot be read): a bug must keep its traceback.
"""

from __future__ import annotations

EXIT_INPUT = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_GONE = 75  # EX_TEMPFAIL: an engine or cluster is gone; what was answered is kept and a rerun resumes
EXIT_REFUSED = 1  # an endpoint refuses what we send (key, model, a parameter): fix the options


class IpmError(Exception):
    """An error of ours whose message is the whole story: one line, no traceback."""

    exit_code: int = EXIT_INPUT
    label: str = "error"  # how the CLI introduces the line

    def line(self) -> str:
        """The one line the command prints."""
        return str(self)


class UsageError(IpmError):
    """An option (or a config file's key) whose value cannot work; the message names it. Nothing was done."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """A config option (from the command line or a YAML file) that cannot work; the message names it."""


class InputError(IpmError):
    """Bad input or a failed check: the message names the file, the record and the field."""


class SetupError(IpmError):
    """This machine lacks what a feature needs (an optional extra, the bundled model, the package's own templates):
    the message says what to install."""


class IncompleteError(IpmError):
    """The work is written but incomplete (requests ended in transient failures): run the same command again."""

    exit_code = EXIT_INCOMPLETE
    label = "incomplete"

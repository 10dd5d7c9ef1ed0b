"""``BuildConfig``: every knob of ``ipm build`` in one place, loadable from YAML, overridable from the CLI."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, fields
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """An option with a value that cannot work; the message names the option (or the config file and key)."""


HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # an HTTP token (RFC 9110)


def parse_settings(items: list[str], option: str) -> dict:
    """``KEY=VALUE`` strings as a mapping; values read as YAML scalars (``64`` is an int, ``true`` a bool)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {item!r}: expected KEY=VALUE")
        try:
            out[key.strip().replace("-", "_")] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip().replace("-", "_")] = value
    return out


@dataclass
class BuildConfig:
    source: str = "esconv"
    """esconv | failed-esconv | json (any ESConv-style JSON list or JSON lines file) | extes | mesc | esc-pro."""
    source_path: str | None = None
    """Local copy of the source (file, or a directory with ESConv.json or the Hub's train/valid/test.txt).
    For esconv, IPM_ESCONV_PATH is used when this is unset; otherwise upstream is downloaded."""
    taxonomy: str | None = None
    """The strategy labels of the source: a built-in name (esconv, extes, mesc, esc-pro) or a YAML file. Default: the
    source's own (ESConv's for esconv, failed-esconv and json)."""
    split: str | None = None
    """decoupledesc (the paper's; default for esconv) | hf (upstream seed-13) | random (default for others)."""
    seed: int = 0
    """Seed of the random split."""
    stage: str = "all"
    """sft: stop after the SFT configs (no LLM). import: also the pairs the source holds itself (ESC-Pro; no LLM).
    all: also mine and judge preference pairs (and import the source's own)."""
    limit: int | None = None
    """Keep the first N dialogues of each split, in the order of the split's index list."""
    out: str = "ipm_prefdial"
    """Build directory. Only README.md, manifest.json and data/ are written inside it."""
    dataset_version: str = "0.2.0"
    """Version of the dataset build (card, manifest, Hub tag v<version>)."""
    on_invalid: str = "error"
    """error: stop on the first bad source record, listing every problem. skip: drop bad dialogues, count them."""
    cache_dir: str | None = None
    """Cache root (downloads, LLM answers). Default: IPM_CACHE_DIR or the user cache directory."""
    prompts_dir: str | None = None
    """Directory of prompt templates replacing the bundled prompts/."""
    trim_tokens: int | None = None
    """Shorten every prompt (SFT rows, mining requests, pairs) from its oldest history until prompt + answer fit
    this many tokens; the system prompt and the current turn stay. Off by default (the paper's data is
    untrimmed)."""
    trim_tokenizer: str = "bundled"
    """Tokenizer that counts prompt tokens (for --trim-tokens and the card's prompt lengths): bundled (SmolLM2,
    offline), a local directory or GGUF, a Hub id, or none (no counting)."""
    # -- mining (stage all) -----------------------------------------------------------------------------
    engine: str = "local"
    """Policy engine: local (embedded llama.cpp) | openai | vllm | transformers."""
    base_url: str | None = None
    """OpenAI-compatible endpoint of the policy (engine openai); the key comes from OPENAI_API_KEY."""
    model: str | None = None
    """Policy model for all three tasks (default: the engine's; local: bundled SmolLM2)."""
    sp_model: str | None = None
    """Strategy-planner policy (e.g. an SFT checkpoint from ipm train), on the same engine kind."""
    rg_model: str | None = None
    """Response-generator policy."""
    vm_model: str | None = None
    """Joint-model policy."""
    concurrency: int | None = None
    """Requests in flight per engine (local: slots; transformers: batch size)."""
    context_tokens: int | None = None
    """Prompt + answer budget per request (local: the slot context, 4096; vllm: max_model_len, 8192; openai:
    none). A prompt over it loses its oldest history; the request is keyed and seeded as sent."""
    samples: int = 1
    """Policy samples per turn (the paper: 1)."""
    temperature: float = 0.7
    """Policy sampling temperature (the paper: 0.7)."""
    top_p: float = 0.95
    """Policy nucleus sampling (the paper: 0.95)."""
    sp_max_tokens: int = 32
    rg_max_tokens: int = 160
    vm_max_tokens: int = 192
    executor: str = "local"
    """Where requests are answered: local (this process) | ray (engines in Ray actors, on a cluster or locally)."""
    workers: int = 2
    """Ray workers (--executor ray); each owns one engine for its whole life and answers whole dialogues."""
    worker_cpus: float | None = None
    """CPUs per Ray worker (default: the cluster's CPUs shared out, at most 1); an embedded engine uses as many
    threads."""
    worker_gpus: float = 0.0
    """GPUs per Ray worker (vLLM: tensor_parallel_size GPUs each)."""
    ray_address: str | None = None
    """Ray cluster to join (default: RAY_ADDRESS, else a local Ray on this machine)."""
    vllm: dict = dataclasses.field(default_factory=dict)
    """vLLM engine settings (AsyncEngineArgs keywords, e.g. max_num_seqs, gpu_memory_utilization, tensor_parallel_size,
    enforce_eager) over the engine's defaults; on the command line --vllm-arg KEY=VALUE (repeatable)."""
    judge_engine: str | None = None
    """Judge engine (default: the policy engine)."""
    judge_base_url: str | None = None
    judge_model: str | None = None
    """Judge model (default: the policy model)."""
    judge_temperature: float = 0.0
    """The judge answers at temperature 0: a verdict should not depend on luck."""
    judge_max_tokens: int = 320
    retries: int = 4
    """Retries of a request that fails with a transient kind (timeout, 429, 5xx, a dropped connection, a body that
    does not read), with jittered exponential backoff from 1 s that honours retry-after. A request still failing
    after them is recorded, and the build ends incomplete (exit code 3) until a rerun answers it."""
    give_up_after: float = 120.0
    """Seconds an engine may go without a single answer while its requests keep failing (a dead server, a lost
    cluster) before the build stops: answers kept, no dataset written, exit code 75; the same command resumes."""
    headers: dict = dataclasses.field(default_factory=dict)
    """Extra HTTP headers for every request to --base-url (a gateway's key, an organisation id); on the command
    line --header KEY=VALUE (repeatable). Sent, never recorded: the manifest keeps their names only."""
    judge_headers: dict = dataclasses.field(default_factory=dict)
    """Extra HTTP headers for the judge's endpoint (default: --header's, when the judge uses --base-url)."""
    no_judge: bool = False
    """Skip the judge: judge is null in every pair."""
    no_cache: bool = False
    """Do not read or write the request cache."""
    retry_failed: bool = False
    """Re-send requests whose recorded answer was a failure (truncated, invalid)."""
    dry_run: bool = False
    """Print the number of requests and a token estimate; send nothing, write nothing."""

    def judge_request_headers(self) -> dict:
        """The judge's headers: its own, else the policy's when both use one endpoint (never sent elsewhere)."""
        if self.judge_headers or (self.judge_base_url and self.judge_base_url != self.base_url):
            return dict(self.judge_headers)
        return dict(self.headers)

    def resolved_split(self) -> str:
        return self.split or ("decoupledesc" if self.source == "esconv" else "random")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, yaml_path: str | Path | None = None, **overrides) -> BuildConfig:
        """Defaults, then the YAML file, then every override that is not None."""
        values: dict = {}
        if yaml_path is not None:
            path = Path(yaml_path)
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"{path}: cannot read the config: {exc}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{path}: expected a mapping of option names to values")
            known = {f.name for f in fields(cls)}
            for key, value in data.items():
                name = str(key).replace("-", "_")
                if name not in known:
                    raise ConfigError(f"{path}: unknown option {key!r}; known: {', '.join(sorted(known))}")
                values[name] = value
            for key, value in values.items():
                check_type(cls, key, value, f"{path}: {key}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


# The range of every numeric option: (least, greatest, least excluded). Checked before any work starts, whether a
# value came from the command line or from a YAML config.
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "seed": (0, None, False), "limit": (1, None, False), "trim_tokens": (64, None, False),
    "concurrency": (1, 4096, False), "context_tokens": (256, None, False), "samples": (1, 64, False),
    "temperature": (0, 2, False), "top_p": (0, 1, True), "judge_temperature": (0, 2, False),
    "sp_max_tokens": (1, 65536, False), "rg_max_tokens": (1, 65536, False), "vm_max_tokens": (1, 65536, False),
    "judge_max_tokens": (1, 65536, False), "workers": (1, 4096, False), "worker_cpus": (0, None, True),
    "worker_gpus": (0, None, False), "give_up_after": (0, None, True), "retries": (0, 20, False),
    "max_tokens": (1, 65536, False),  # ipm engine-check
}
FLOATS = frozenset({"temperature", "top_p", "judge_temperature", "worker_cpus", "worker_gpus", "give_up_after"})
MAPPINGS = frozenset({"vllm", "headers", "judge_headers"})
FLAGS = frozenset({"no_judge", "no_cache", "retry_failed", "dry_run"})


def option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_type(cls, name: str, value: object, where: str) -> None:
    """A YAML value of the wrong kind (``concurrency: many``) is named before anything runs."""
    if value is None:
        return
    if name in FLOATS:
        ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif name in RANGES:
        ok, kind = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif name in MAPPINGS:
        ok, kind = isinstance(value, dict), "a mapping"
    elif name in FLAGS:
        ok, kind = isinstance(value, bool), "true or false"
    else:
        ok, kind = isinstance(value, str), "a string"
    if not ok:
        raise ConfigError(f"{where}: expected {kind}, got {value!r}")


def check_range(name: str, value: float | None, label: str | None = None) -> None:
    """``value`` within the range of option ``name``, else a ``ConfigError`` naming ``label`` (default: the option)."""
    if value is None or name not in RANGES:
        return
    low, high, open_low = RANGES[name]
    if (low is not None and (value <= low if open_low else value < low)) or (high is not None and value > high):
        if high is None:
            rule = f"above {low:g}" if open_low else f"at least {low:g}"
        else:
            rule = f"above {low:g} and at most {high:g}" if open_low else f"between {low:g} and {high:g}"
        raise ConfigError(f"{label or option(name)} must be {rule}, not {value!r}")


def parse_headers(items: list[str], name: str) -> dict[str, str]:
    """``--header KEY=VALUE`` values as a mapping, header names checked (the values are never echoed)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not HEADER_NAME.fullmatch(key):
            shown = key if HEADER_NAME.fullmatch(key or "-") else "..."
            raise ConfigError(f"{name} {shown}=...: expected NAME=VALUE with a header name of letters, digits and "
                              "-")
        out[key] = value.strip()
    return out


def check_headers(name: str, headers: dict) -> None:
    for key, value in headers.items():
        if not isinstance(key, str) or not HEADER_NAME.fullmatch(key) or not isinstance(value, str) \
                or "\n" in value or "\r" in value:
            raise ConfigError(f"{option(name)}: header {str(key)!r} needs a name of letters, digits and - and a "
                              "one-line string value")

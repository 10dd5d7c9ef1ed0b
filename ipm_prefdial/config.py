"""``BuildConfig``: every knob of ``ipm build`` in one place, loadable from YAML, overridable from the command line.

Each option is declared once, on its field (``options.option``): type, default, range or choices, help, group. The
command line is made from these declarations (``cli.options``), and ``BuildConfig.check`` checks a config before
any work starts. The engine options (``EngineOptions``) and the executor options (``ExecutorOptions``) are shared
with ``ipm infer``'s config; ``EngineSpec`` is what one role's engine is made from (``engines.make_engine``, the Ray
executor), for the build's policy and judge, ``ipm infer`` and ``ipm eval``'s judge alike.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from ipm_prefdial.engines import ENGINES, EngineSpec
from ipm_prefdial.errors import ConfigError
from ipm_prefdial.executors import EXECUTORS
from ipm_prefdial.options import check_options, flag, load_config, option
from ipm_prefdial.sources.load import SOURCES
from ipm_prefdial.splits import SPLIT_METHODS
from ipm_prefdial.taxonomy import BUILTIN

# The groups options are listed under (``ipm build --help``), in this order.
SOURCE, OUTPUT, ENGINE, JUDGE, EXECUTOR = "Source and split", "Output", "Engines", "Judge", "Executor"
COST = "Cost and batches"
GROUPS = (SOURCE, OUTPUT, ENGINE, JUDGE, EXECUTOR, COST)
STAGES = ("sft", "import", "all")  # import: the SFT configs and the pairs the source itself holds (ESC-Pro), no LLM
IMPORT_SOURCES = ("esc-pro",)  # sources holding pairs of their own
BUILD_FILES = ("README.md", "manifest.json", "data")  # everything a build may write in its directory
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+-]{0,63}")
TOKENS = (1, 65536)  # the range of every answer bound


@dataclass
class EngineOptions:
    """The options of the engines that answer the policy's requests (``ipm build``, ``ipm infer``)."""

    base_url: str | None = option(None, """OpenAI-compatible endpoint of the models (key: OPENAI_API_KEY; Azure:
        AZURE_OPENAI_API_KEY, a deployment URL with ?api-version=...).""", group=ENGINE)
    model: str | None = option(None, """Model for SP, RG and VM (default: the engine's; local: the bundled
        SmolLM2-135M).""", group=ENGINE)
    sp_model: str | None = option(None, "SP model, e.g. an SFT checkpoint from ipm train (same engine kind).",
                                  group=ENGINE)
    rg_model: str | None = option(None, "RG model.", group=ENGINE)
    vm_model: str | None = option(None, "VM (joint) model.", group=ENGINE)
    concurrency: int | None = option(None, "Requests in flight per engine (local: slots; transformers: batch size).",
                                     group=ENGINE, range=(1, 4096))
    context_tokens: int | None = option(None, """Prompt + answer budget per request (default: the engine's; local
        4096 per slot, vllm 8192). Longer prompts lose their oldest history; the request is keyed and seeded as
        sent.""", group=ENGINE, range=(256, None))
    retries: int = option(4, """Retries of a request that fails with a transient kind (timeout, 429, 5xx, a dropped
        connection, a body that does not read), with jittered exponential backoff from 1 s that honours retry-after;
        one still failing is recorded and leaves the work incomplete (exit code 3) until a rerun answers it.""",
                          group=ENGINE, range=(0, 20))
    give_up_after: float = option(120.0, """Seconds an engine may go without a single answer while its requests keep
        failing (a dead server, a lost cluster) before the run stops: answers kept, exit code 75; the same command
        resumes.""", group=ENGINE, range=(0, None, True))
    rpm: float | None = option(None, """At most this many requests a minute to each HTTP endpoint (the client's own
        cap, on top of following the server's x-ratelimit-* headers).""", group=ENGINE, range=(0, None, True))
    tpm: float | None = option(None, """At most this many tokens a minute to each HTTP endpoint (a request counts its
        prompt estimate plus its max tokens).""", group=ENGINE, range=(0, None, True))
    headers: dict = option(help="""An HTTP header for every request to --base-url, NAME=VALUE (repeatable; a
        gateway's key, an organisation id). Sent, never recorded: the manifest keeps their names only.""",
                           group=ENGINE, flags=("--header",), pairs="headers")
    vllm: dict = option(help="""A vLLM engine setting, KEY=VALUE (repeatable; AsyncEngineArgs keywords over the
        engine's defaults, e.g. max_num_seqs=64, gpu_memory_utilization=0.8, tensor_parallel_size=2).""",
                        group=ENGINE, flags=("--vllm-arg",), pairs="settings")

    def engine_spec(self, name: str, model: str | None, **changes) -> EngineSpec:
        """The spec of an engine of these options (``changes``: another endpoint or headers, as the judge's)."""
        values = {"base_url": self.base_url, "concurrency": self.concurrency, "context_tokens": self.context_tokens,
                  "headers": self.headers, "retries": self.retries, "give_up_after": self.give_up_after,
                  "rpm": self.rpm, "tpm": self.tpm, **changes}
        values["headers"] = tuple(sorted(values["headers"].items()))
        options = tuple(sorted(self.vllm.items())) if name == "vllm" else ()
        return EngineSpec(name, model, options=options, **values)


@dataclass
class ExecutorOptions:
    """Where requests are answered (``ipm build``, ``ipm infer``)."""

    executor: str = option("local", """local: this process | ray: engines in Ray actors (RAY_ADDRESS or
        --ray-address, else a local Ray on this machine).""", group=EXECUTOR, choices=EXECUTORS)
    workers: int = option(2, "Ray workers; each owns one engine for its whole life and answers whole dialogues.",
                          group=EXECUTOR, range=(1, 4096))
    worker_cpus: float | None = option(None, """CPUs per Ray worker (default: the cluster's CPUs shared out, at most
        1); an embedded engine uses as many threads.""", group=EXECUTOR, range=(0, None, True))
    worker_gpus: float = option(0.0, "GPUs per Ray worker (vLLM: tensor_parallel_size GPUs each).", group=EXECUTOR,
                                range=(0, None))
    ray_address: str | None = option(None, "Ray cluster to join (default: RAY_ADDRESS, else a local Ray).",
                                     group=EXECUTOR)


@dataclass
class SourceOptions:
    """What a build reads and how it splits it."""

    source: str = option("esconv", """esconv | failed-esconv | json (any ESConv-style JSON list or JSON lines file)
        | extes | mesc | esc-pro (your copy, by --source-path).""", group=SOURCE, choices=SOURCES)
    source_path: str | None = option(None, """Local copy of the source: a JSON list / JSONL file, or a directory
        (with ESConv.json or the Hub's train/valid/test.txt). For esconv, IPM_ESCONV_PATH is used when unset;
        otherwise upstream is downloaded, verified and cached.""", group=SOURCE)
    taxonomy: str | None = option(None, """The strategy labels: esconv | extes | mesc | esc-pro | a YAML file
        (default: the source's own; ESConv's for esconv, failed-esconv and json).""", group=SOURCE)
    split: str | None = option(None, """decoupledesc (the paper's; default for esconv) | hf (upstream seed-13) |
        random (default for others).""", group=SOURCE, choices=SPLIT_METHODS)
    seed: int = option(0, "Seed of --split random.", group=SOURCE, range=(0, None))
    limit: int | None = option(None, "Keep the first N dialogues of each split, in the order of the split's index "
                                     "list.", group=SOURCE, range=(1, None))
    on_invalid: str = option("error", """error: stop on the first bad source record, listing every problem | skip:
        drop bad dialogues, counted in the manifest.""", group=SOURCE, choices=("error", "skip"))


@dataclass
class OutputOptions:
    """What a build writes, and where."""

    stage: str = option("all", """sft: stop after the SFT configs (no LLM) | import: also the pairs the source holds
        itself (ESC-Pro; no LLM) | all: also mine and judge preference pairs.""", group=OUTPUT, choices=STAGES)
    out: str = option("ipm_prefdial", """Build directory: new, empty or an earlier build. Only README.md,
        manifest.json and data/ are written inside it.""", group=OUTPUT)
    dataset_version: str = option("0.2.0", "Version of the dataset build (card, manifest, Hub tag v<version>).",
                                  group=OUTPUT)
    cache_dir: str | None = option(None, "Cache root (downloads, LLM answers). Default: IPM_CACHE_DIR or the user "
                                         "cache directory.", group=OUTPUT)
    prompts_dir: str | None = option(None, "Directory of prompt templates replacing the bundled prompts/.",
                                     group=OUTPUT)
    trim_tokens: int | None = option(None, """Shorten every prompt (SFT rows, mining requests, pairs) from its oldest
        history until prompt + answer fit N tokens; the system prompt and the current turn stay. Off by default (the
        paper's data is untrimmed).""", group=OUTPUT, range=(64, None))
    trim_tokenizer: str = option("bundled", """Tokenizer that counts prompt tokens (for --trim-tokens and the card's
        prompt lengths): bundled (SmolLM2, offline), a local directory or GGUF, a Hub id, or none (no counting).""",
                                 group=OUTPUT)
    no_cache: bool = option(False, "Neither read nor write the request cache.", group=OUTPUT)
    retry_failed: bool = option(False, "Re-send requests whose recorded answer was a failure (truncated, invalid).",
                                group=OUTPUT)
    dry_run: bool = option(False, """Print the number of requests and a token estimate per task; send nothing, write
        nothing.""", group=OUTPUT)


@dataclass
class PolicyOptions:
    """The policy that is mined: its engine and how it is sampled."""

    engine: str = option("local", "Policy engine: local (embedded llama.cpp) | openai | vllm | transformers.",
                         group=ENGINE, choices=ENGINES)
    samples: int = option(1, "Policy samples per turn (the paper: 1).", group=ENGINE, range=(1, 64))
    temperature: float = option(0.7, "Policy sampling temperature (the paper: 0.7).", group=ENGINE, range=(0, 2))
    top_p: float = option(0.95, "Policy nucleus sampling (the paper: 0.95).", group=ENGINE, range=(0, 1, True))
    sp_max_tokens: int = option(32, "Answer bound of SP requests.", group=ENGINE, range=TOKENS)
    rg_max_tokens: int = option(160, "Answer bound of RG requests; a reply cut there is trimmed to its last full "
                                     "sentence.", group=ENGINE, range=TOKENS)
    vm_max_tokens: int = option(192, "Answer bound of VM requests.", group=ENGINE, range=TOKENS)


@dataclass
class JudgeOptions:
    """The judge of the response-level pairs."""

    judge_engine: str | None = option(None, "Judge engine (default: the policy engine).", group=JUDGE,
                                      choices=ENGINES)
    judge_base_url: str | None = option(None, "Judge endpoint (engine openai; default: --base-url).", group=JUDGE)
    judge_model: str | None = option(None, "Judge model (default: the policy model).", group=JUDGE)
    judge_temperature: float = option(0.0, "Judge temperature (0: a verdict should not depend on luck).",
                                      group=JUDGE, range=(0, 2))
    judge_max_tokens: int = option(320, "Answer bound of judge requests.", group=JUDGE, range=TOKENS)
    judge_headers: dict = option(help="""An HTTP header for the judge's endpoint, NAME=VALUE (repeatable; default:
        --header's, when the judge uses --base-url).""", group=JUDGE, flags=("--judge-header",), pairs="headers")
    no_judge: bool = option(False, "Skip the judge: judge is null in every pair.", group=JUDGE)


PRICE = (0, None)  # US dollars per million tokens


@dataclass
class CostOptions:
    """What requests cost, what a build may spend, and the provider's batch API (engine openai)."""

    price_input: float | None = option(None, "Policy: US dollars per million prompt tokens.", group=COST, range=PRICE)
    price_cached_input: float | None = option(None, """Policy: US dollars per million cached prompt tokens (default:
        the input price).""", group=COST, range=PRICE)
    price_output: float | None = option(None, "Policy: US dollars per million completion tokens.", group=COST,
                                        range=PRICE)
    judge_price_input: float | None = option(None, "Judge: US dollars per million prompt tokens (default: the "
                                                   "policy's when the judge uses its endpoint and model).", group=COST,
                                             range=PRICE)
    judge_price_cached_input: float | None = option(None, "Judge: US dollars per million cached prompt tokens.",
                                                    group=COST, range=PRICE)
    judge_price_output: float | None = option(None, "Judge: US dollars per million completion tokens.", group=COST,
                                              range=PRICE)
    batch_discount: float = option(0.5, "Share of the price a batch saves (OpenAI, Azure: 0.5).", group=COST,
                                   range=(0, 1))
    max_spend: float | None = option(None, """Never let the build's spend pass this many US dollars: its answers
        (the cache's included) plus the worst case of every request in flight or in a batch; a request that would
        pass it is not sent and the build ends incomplete (exit code 3). A rerun with a higher cap goes on.""",
                                     group=COST, range=(0, None, True))
    batch: bool = option(False, """Send the policy's requests through the provider's batch API (/v1/files and
        /v1/batches; Azure's global batch): half the price, answers within 24 h, the same bytes as an online
        build.""", group=COST)
    judge_batch: bool = option(False, "Send the judge's requests through the batch API.", group=COST)
    batch_wait: float | None = option(None, """Seconds to wait for batches before stopping with exit code 3 (0: submit
        and stop; default: until they end). A rerun of the same command collects them.""", group=COST,
                                      range=(0, None))
    batch_poll: float = option(60.0, "Seconds between asking the provider how the batches stand.", group=COST,
                               range=(0, None, True))
    batch_max_lines: int | None = option(None, """Lines per batch file (default and most: the provider's; OpenAI
        50,000, Azure 100,000; files are also kept under 200 MB).""", group=COST, range=(1, 100_000))
    batch_export: str | None = option(None, """Write the requests still to answer as batch JSON lines in this
        directory (one file per role, model and part) and stop (exit code 3): run them anywhere (vllm run-batch, a
        provider), read the output with ipm batches import, then run the same command again.""", group=COST)

    def prices(self, role: str):
        """The prices of a role ("policy" or "judge"); the judge's default to the policy's on the same endpoint."""
        from ipm_prefdial.engines.spend import Prices

        mine = [self.price_input, self.price_cached_input, self.price_output]
        if role == "judge":
            own = [self.judge_price_input, self.judge_price_cached_input, self.judge_price_output]
            same = not getattr(self, "judge_base_url", None) and not getattr(self, "judge_model", None)
            mine = own if any(v is not None for v in own) or not same else mine
        return Prices(mine[0] or 0.0, mine[2] or 0.0, mine[1], self.batch_discount)

    @property
    def priced(self) -> bool:
        return any(getattr(self, f"{who}price_{kind}") is not None for who in ("", "judge_")
                   for kind in ("input", "cached_input", "output"))


# The groups, in the order of ``ipm build --help`` and of the fields: a base class listed last comes first.
@dataclass
class BuildConfig(CostOptions, ExecutorOptions, JudgeOptions, EngineOptions, PolicyOptions, OutputOptions,
                  SourceOptions):
    """Every option of ``ipm build``."""

    # a YAML config may give the prices as one mapping
    nested = {"prices": {"input": "price_input", "cached_input": "price_cached_input", "output": "price_output",
                         "batch_discount": "batch_discount",
                         "judge": {"input": "judge_price_input", "cached_input": "judge_price_cached_input",
                                   "output": "judge_price_output"}}}

    def resolved_split(self) -> str:
        return self.split or ("decoupledesc" if self.source == "esconv" else "random")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def load(cls, yaml_path: str | Path | None = None, **given) -> BuildConfig:
        """Defaults, then the YAML file, then every value given that is not None."""
        return load_config(cls, yaml_path, given)

    # -- what each role's engine is made from --------------------------------------------------------------

    def judge_request_headers(self) -> dict:
        """The judge's headers: its own, else the policy's when both use one endpoint (never sent elsewhere)."""
        if self.judge_headers or (self.judge_base_url and self.judge_base_url != self.base_url):
            return dict(self.judge_headers)
        return dict(self.headers)

    def engine_specs(self) -> dict[str, EngineSpec]:
        """The engine of each task's policy and of the judge (unless --no-judge)."""
        specs = {task: self.engine_spec(self.engine, getattr(self, f"{task}_model") or self.model)
                 for task in ("sp", "rg", "vm")}
        if not self.no_judge:
            specs["judge"] = self.engine_spec(self.judge_engine or self.engine, self.judge_model or self.model,
                                              base_url=self.judge_base_url or self.base_url,
                                              headers=self.judge_request_headers())
        return specs

    # -- checks ----------------------------------------------------------------------------------------------

    def check(self) -> None:
        """Every option, before any work starts: choices, ranges, combinations, and where the build may be
        written. A bad value is one line naming the option (``ConfigError``); nothing is read, sent or written."""
        check_options(self)
        if self.stage == "all" and self.engine == "openai" and not self.base_url:
            raise ConfigError("--engine openai needs --base-url")
        if self.stage == "all" and not self.no_judge and self.judge_engine == "openai" and not (
                self.judge_base_url or self.base_url):
            raise ConfigError("--judge-engine openai needs --judge-base-url")
        for name in ("base_url", "judge_base_url"):
            if getattr(self, name) is not None:
                check_url(getattr(self, name), flag(name))
        if not VERSION.fullmatch(self.dataset_version):
            raise ConfigError(f"--dataset-version must look like 1.2.0 (letters, digits, '.', '-', '+'; it becomes "
                              f"the Hub tag v<version>), not {self.dataset_version!r}")
        biggest = max(self.sp_max_tokens, self.rg_max_tokens, self.vm_max_tokens, self.judge_max_tokens)
        if self.context_tokens is not None and self.context_tokens <= biggest:
            raise ConfigError(f"--context-tokens {self.context_tokens} leaves no room for a prompt next to an answer "
                              f"of up to {biggest} tokens (the largest --*-max-tokens)")
        if self.stage == "import" and self.source not in IMPORT_SOURCES:
            raise ConfigError(f"--stage import: the {self.source} source holds no pairs of its own (ESC-Pro's "
                              "non-preferred replies are such pairs); use --stage sft or all")
        if self.taxonomy is not None and self.taxonomy not in BUILTIN and not Path(self.taxonomy).is_file():
            raise ConfigError(f"--taxonomy {self.taxonomy}: neither a built-in taxonomy ({', '.join(BUILTIN)}) nor "
                              "a file")
        for name in ("cache_dir", "prompts_dir"):
            path = getattr(self, name)
            if path is not None and Path(path).exists() and not Path(path).is_dir():
                raise ConfigError(f"{flag(name)} {path}: not a directory")
        if self.prompts_dir is not None and not Path(self.prompts_dir).is_dir():
            raise ConfigError(f"--prompts-dir {self.prompts_dir}: no such directory")
        self.check_cost()
        check_out(Path(self.out))

    def check_cost(self) -> None:
        """Batches, exports and the spend cap need an HTTP engine, the request cache and this process."""
        wanted = [name for name in ("batch", "judge_batch", "batch_export", "max_spend", "price_input",
                                    "price_cached_input", "price_output", "judge_price_input",
                                    "judge_price_cached_input", "judge_price_output")
                  if getattr(self, name) not in (None, False)]
        if not wanted or self.stage != "all":
            return
        first = flag(wanted[0])
        if self.executor != "local":
            raise ConfigError(f"{first} runs with --executor local (the driver holds the batches and counts the "
                              "dollars)")
        if self.no_cache and (self.batch or self.judge_batch or self.batch_export):
            raise ConfigError(f"{first} records its batches in the request cache: drop --no-cache")
        if (self.batch or self.batch_export) and self.engine != "openai":
            raise ConfigError(f"{first}: the policy engine is {self.engine}; batches need --engine openai")
        if self.judge_batch and (self.no_judge or (self.judge_engine or self.engine) != "openai"):
            raise ConfigError("--judge-batch needs the judge on --engine openai (or --judge-engine openai)")
        if self.max_spend is not None and not self.priced:
            raise ConfigError("--max-spend needs prices: --price-input and --price-output (and --judge-price-* for "
                              "a judge of its own), or prices: in the YAML config")
        if self.batch_export and not (self.model or all(getattr(self, f"{t}_model") for t in ("sp", "rg", "vm"))):
            raise ConfigError("--batch-export needs --model: nothing asks the endpoint which model it serves")


# Options that may hold a local path: a build records only the last part (a file or folder name), since a build
# is published and must not carry the building machine's directories; sources and models are identified by
# their sha256 elsewhere in the manifest.
PATH_OPTIONS = ("source_path", "taxonomy", "out", "cache_dir", "prompts_dir", "model", "sp_model", "rg_model",
                "vm_model", "judge_model", "trim_tokenizer", "batch_export")
SHELL_SAFE = re.compile(r"[\w./:@%+=,-]+")


def recorded_config(cfg: BuildConfig) -> dict:
    """The config as a build records it: local paths as names, nothing secret (header values, a URL's user and
    password or query keys are left out)."""
    from ipm_prefdial.engines.urls import public_url

    recorded = cfg.as_dict()
    for name in PATH_OPTIONS:
        value = recorded.get(name)
        if isinstance(value, str) and (os.path.isabs(value) or os.path.exists(value)):
            recorded[name] = Path(value).name
    for name in ("headers", "judge_headers"):
        recorded[name] = sorted(recorded[name])  # their names: the values may be keys
    for name in ("base_url", "judge_base_url"):
        if recorded[name]:
            recorded[name] = public_url(recorded[name])
    return recorded


def rerun_command(recorded: dict) -> str:
    """The ``ipm build`` command of a recorded config (the options that differ from the defaults; local paths are
    names, header values left out): what completes an incomplete build."""
    defaults = BuildConfig().as_dict()
    parts = ["ipm build"]
    for name, value in recorded.items():
        if name in ("dry_run", "vllm", "headers", "judge_headers") or value == defaults.get(name) or value is None:
            continue
        if isinstance(value, bool):
            parts.append(flag(name))
        else:
            text = str(value)
            parts.append(f"{flag(name)} {text if SHELL_SAFE.fullmatch(text) else shlex.quote(text)}")
    parts += [f"--vllm-arg {k}={v}" for k, v in sorted(recorded.get("vllm", {}).items())]
    parts += [f"--header {k}=..." for k in recorded.get("headers", [])]
    parts += [f"--judge-header {k}=..." for k in recorded.get("judge_headers", [])]
    return " ".join(parts)


def check_url(url: str, name: str) -> None:
    """An endpoint that can be asked: http(s), a host, a port in range (the message never repeats a password)."""
    from urllib.parse import urlsplit

    from ipm_prefdial.engines.urls import public_url

    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and not re.search(r"\s", url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        ok = False
    if not ok:
        try:
            shown = public_url(url)
        except ValueError:
            shown = url.split("@")[-1]
        raise ConfigError(f"{name} must be an http:// or https:// URL with a host (and a port from 1 to 65535), "
                          f"not {shown!r}")


def check_out(out: Path) -> None:
    """A build writes README.md, manifest.json and data/ in its directory and removes stale parquet files there, so
    it may only be a new or empty directory, an earlier build, or the package directory of a checkout (where
    ``load_dataset("ipm_prefdial", ...)`` finds it); anything else (a file, a folder of other things) is refused
    before anything is read or written."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out}: a file, not a directory")
    if out.resolve() == Path(__file__).resolve().parent:  # the checkout's package directory (PRODUCT.md)
        return
    # hidden entries (.git, .gitattributes of a clone of the dataset's Hub repo) are left alone, not refused
    foreign = sorted(p.name for p in out.iterdir() if p.name not in BUILD_FILES and not p.name.startswith("."))
    if not foreign and (out / "data").exists() and not (out / "data").is_dir():
        foreign = ["data (a file)"]
    if not foreign and (out / "manifest.json").is_file():
        try:
            name = json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("name")
        except (ValueError, UnicodeDecodeError, AttributeError):
            name = None
        if name != "IPM-PrefDial":
            foreign = ["manifest.json (not an IPM-PrefDial build's)"]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"--out {out}: holds {shown}, so it is not a build directory; a build only writes "
                          f"{', '.join(BUILD_FILES)} there: choose a new or empty directory")

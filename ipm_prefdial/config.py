"""``BuildConfig``: every knob of ``ipm build`` in one place, loadable from YAML, overridable from the CLI."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path

import yaml


class ConfigError(ValueError):
    pass


@dataclass
class BuildConfig:
    source: str = "esconv"
    """esconv | failed-esconv | json (any ESConv-style JSON list or JSON lines file)."""
    source_path: str | None = None
    """Local copy of the source (file, or a directory with ESConv.json or the Hub's train/valid/test.txt).
    For esconv, IPM_ESCONV_PATH is used when this is unset; otherwise upstream is downloaded."""
    split: str | None = None
    """decoupledesc (the paper's; default for esconv) | hf (upstream seed-13) | random (default for others)."""
    seed: int = 0
    """Seed of the random split."""
    stage: str = "all"
    """sft: stop after the SFT configs (no LLM). all: also mine and judge preference pairs."""
    limit: int | None = None
    """Keep the first N dialogues of each split, in the order of the split's index list."""
    out: str = "ipm_prefdial"
    """Build directory. Only README.md, manifest.json and data/ are written inside it."""
    dataset_version: str = "0.1.0"
    """Version of the dataset build (card, manifest, Hub tag v<version>)."""
    on_invalid: str = "error"
    """error: stop on the first bad source record, listing every problem. skip: drop bad dialogues, count them."""
    cache_dir: str | None = None
    """Cache root (downloads, LLM answers). Default: IPM_CACHE_DIR or the user cache directory."""
    prompts_dir: str | None = None
    """Directory of prompt templates replacing the bundled prompts/."""

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
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

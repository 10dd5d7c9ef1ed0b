"""The dataset card (README.md of a build): YAML metadata the Hub and ``load_dataset`` read, plus prose."""

from __future__ import annotations

from pathlib import Path

import jinja2
import yaml

from ipm_prefdial.errors import SetupError
from ipm_prefdial.release.features import CONFIG_SPLITS, FEATURES, PAIR_CONFIGS, data_file
from ipm_prefdial.taxonomy import from_manifest

# What load_dataset(<build>) opens without a config name: response-level pairs where the build has them (the
# decoupled signal), else the response-level SFT data.
DEFAULT_CONFIGS = ("response_pairs", "response_sft")


# The card's source_datasets: ESConv (and FailedESConv, released with it) is thu-coai/esconv on the Hub.
SOURCE_DATASETS = {"esconv": ["thu-coai/esconv"], "failed-esconv": ["thu-coai/esconv"],
                   "esc-pro": ["XingYuSSS/ESC-Pro"]}
# How the card names the corpus a build was made from (an ESConv-style JSON file: by its file name).
CORPUS_NAMES = {"esconv": "ESConv", "failed-esconv": "FailedESConv", "extes": "ExTES", "mesc": "MESC",
                "esc-pro": "ESC-Pro"}


def corpus_name(source: dict) -> str:
    return CORPUS_NAMES.get(source["source"]) or f"`{source.get('file', source['source'])}`"


def default_config(configs) -> str | None:
    return next((c for c in DEFAULT_CONFIGS if c in configs), None)


def card_template_dir() -> Path:
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "data_cards", here.parent / "data_cards"):
        if (candidate / "README.md.j2").is_file():
            return candidate
    raise SetupError(f"dataset-card template not found next to {here} (data_cards/README.md.j2)")


def size_category(rows: int) -> str:
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < bound:
            return name
    return "1M<n<10M"


def metadata(manifest: dict) -> dict:
    """The card's YAML header, derived from the manifest only."""
    configs, infos = [], []
    counts = manifest["counts"]
    listed = {c: [s for s in CONFIG_SPLITS[c] if counts[c].get(s)] for c in FEATURES if c in counts}
    listed = {c: splits for c, splits in listed.items() if splits}  # a config with no rows at all is not listed
    default = default_config(listed)
    for config, splits in listed.items():
        entry = {"config_name": config,
                 "data_files": [{"split": s, "path": data_file(config, s).replace("-00000-of-00001", "-*")}
                                for s in splits]}
        if config == default:
            entry["default"] = True
        configs.append(entry)
        files = {s: manifest["files"][data_file(config, s)] for s in splits}
        infos.append({
            "config_name": config,
            "features": FEATURES[config]._to_yaml_list(),
            "splits": [{"name": s, "num_bytes": f["arrow_bytes"], "num_examples": f["rows"]} for s, f in files.items()],
            "download_size": sum(f["bytes"] for f in files.values()),
            "dataset_size": sum(f["arrow_bytes"] for f in files.values()),
        })
    total = sum(n for per in counts.values() for n in per.values())
    tags = ["emotional-support", *([] if manifest["source"]["source"] == "json" else [manifest["source"]["source"]]),
            "dialogue", "sft"]
    if any(n for c in PAIR_CONFIGS for n in counts.get(c, {}).values()):
        tags += ["preference", "dpo"]
    if manifest.get("mining") and any(n for c in PAIR_CONFIGS for n in counts.get(c, {}).values()):
        tags.append("synthetic")  # a model wrote the rejected sides
    return {
        "license": "cc-by-nc-4.0",
        "language": ["en"],
        "pretty_name": "IPM-PrefDial",
        "task_categories": ["text-generation"],
        "source_datasets": SOURCE_DATASETS.get(manifest["source"]["source"], ["original"]),
        "tags": tags,
        "size_categories": [size_category(total)],
        "version": manifest["version"],
        "configs": configs,
        "dataset_info": infos,
    }


def render_card(manifest: dict, name: str) -> str:
    """The card text; ``name`` is what users pass to load_dataset (the build directory)."""
    header = yaml.safe_dump(metadata(manifest), sort_keys=False, allow_unicode=True, width=1000)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(card_template_dir())),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    taxonomy = from_manifest(manifest)
    return env.get_template("README.md.j2").render(header=header, m=manifest, name=name, strategies=taxonomy.names,
                                                   taxonomy=taxonomy, corpus=corpus_name(manifest["source"]),
                                                   gold=_gold_and_pairs(manifest, taxonomy.names))


def _gold_and_pairs(manifest: dict, names: tuple[str, ...]) -> dict[str, tuple[int, int]]:
    """Per label: gold supporter turns over all splits, and pairs over the pair configs (mined and imported)."""
    gold = {s: sum(per.get(s, 0) for per in manifest["strategy_distribution"].values()) for s in names}
    by = manifest.get("pairs_by_strategy") or {}
    pairs = {s: sum(n for c, n in (by.get(s) or {}).items() if ":" not in c) for s in names}
    return {s: (gold[s], pairs[s]) for s in names}


def read_card_metadata(text: str) -> dict:
    """The YAML header of a card; {} when there is none."""
    if not text.startswith("---\n"):
        return {}
    end = text.find("\n---\n", 4)
    if end < 0:
        return {}
    return yaml.safe_load(text[4:end]) or {}

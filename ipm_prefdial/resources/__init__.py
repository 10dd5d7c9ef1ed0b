"""Package data: the split index lists (metadata about ESConv, not ESConv text)."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files


@cache
def split_indices() -> dict[str, list[int]]:
    """Index lists into ESConv's original order; see the ``_note`` entry of split_indices.json."""
    data = json.loads(files(__package__).joinpath("split_indices.json").read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}

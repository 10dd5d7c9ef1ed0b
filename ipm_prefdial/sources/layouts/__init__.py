"""Corpora in their own layouts: ExTES, MESC and ESC-Pro, read into the same Dialogue records as ESConv.

Every reader collects all problems of a file, each naming the file, the dialogue (its index in that file) and the
field, as ``records.py`` does for ESConv; with ``on_invalid="skip"`` a bad dialogue is dropped and listed in
``skipped`` instead. ``dialog_id`` is the index in the corpus's original order (skipped dialogues leave a gap).
Texts are whitespace-normalised; labels are read with the taxonomy (its variants and empty-label rule).

Counts (always present, 0 when nothing happened), over the dialogues kept:

- ``dialogues``, ``supporter_turns`` (supporter turns with a label: the turns a build makes samples of);
- ``empty_labels_skipped``: supporter turns with an empty label kept as history (strategy "") because the taxonomy
  says ``empty: skip`` (ExTES's greetings and closings);
- ``same_speaker_runs``: runs of two or more consecutive utterances of one side (kept as separate utterances; the
  conversion merges them);
- ExTES: ``ai_objects``, replies whose ``AI`` value is an object rather than a string;
- MESC: ``descriptions_stripped`` (turns whose text lost the glued video description), ``csv_matched`` and
  ``csv_unmatched`` (dialogues whose clean text came from ``MESC.csv``, or not found there when it was present);
- ESC-Pro: ``negatives``, the non-preferred replies kept on their supporter turns.
"""

from __future__ import annotations

from pathlib import Path

from ipm_prefdial.sources import LoadedSource, SourceError
from ipm_prefdial.taxonomy import Taxonomy

LAYOUTS = ("extes", "mesc", "esc-pro")


def load_layout(layout: str, path: Path, taxonomy: Taxonomy, on_invalid: str = "error") -> LoadedSource:
    """Read ``path`` (a file, a directory holding the corpus's usual file names, or for ExTES a zip) in ``layout``.

    Problems raise one SourceError listing all of them (unknown labels summarised first) unless ``on_invalid`` is
    "skip", which drops the bad dialogues and lists them in ``skipped``."""
    if layout not in LAYOUTS:
        raise SourceError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if on_invalid not in ("error", "skip"):
        raise SourceError(f"on_invalid must be 'error' or 'skip', not {on_invalid!r}")
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if layout == "extes":
        from ipm_prefdial.sources.layouts.extes import load
    elif layout == "mesc":
        from ipm_prefdial.sources.layouts.mesc import load
    else:
        from ipm_prefdial.sources.layouts.esc_pro import load
    return load(path, taxonomy, on_invalid)


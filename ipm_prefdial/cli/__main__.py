"""``python -m ipm_prefdial.cli``: the ``ipm`` command (e.g. under ``accelerate launch``)."""

from ipm_prefdial.cli import app

app()

"""The wheel carries prompts/, data_cards/ and the split index lists, and works outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import ESCONV_JSON

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_ships_templates_and_runs_outside_the_repo(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "dist").glob("ipm_prefdial-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("ipm_prefdial/prompts/sp_system.j2", "ipm_prefdial/prompts/rg_instruction.j2",
                   "ipm_prefdial/data_cards/README.md.j2", "ipm_prefdial/resources/split_indices.json"):
        assert needed in names
    assert not any(n.startswith(("ipm_prefdial/data/", "ipm_prefdial/README.md", "ipm_prefdial/manifest.json"))
                   for n in names), "a build leaked into the wheel"
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import ipm_prefdial.prompts as p, ipm_prefdial.release.card as c; "
            "print(p.default_prompts_dir()); print(c.card_template_dir()); "
            "from ipm_prefdial.cli import app; app()")
    proc = subprocess.run(
        [sys.executable, "-c", code, "build", "--stage", "sft", "--limit", "1", "--source-path", str(ESCONV_JSON),
         "--out", "built"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    prompts_dir, card_dir = proc.stdout.splitlines()[:2]
    assert prompts_dir == str(site / "ipm_prefdial" / "prompts")
    assert card_dir == str(site / "ipm_prefdial" / "data_cards")
    assert (tmp_path / "built" / "manifest.json").is_file()

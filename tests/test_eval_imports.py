"""torch, torchvision, open_clip and torchmetrics load only inside the evaluation process,
and what the CLI, engine and TUI import of the evaluation package stays light."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from conftest import REPO

HEAVY = ("torch", "torchvision", "open_clip", "torchmetrics")
LIGHT_MODULES = [
    "loradeck.core.evaluation",
    "loradeck.core.evaluation.commands",
    "loradeck.core.evaluation.leaderboard",
    "loradeck.core.evaluation.results",
    "loradeck.core.evaluation.scoring",
    "loradeck.core.evaluation.discovery",
    "loradeck.core.evaluation.layouts",
    "loradeck.core.evaluation.prompts",
    "loradeck.core.evaluation.jobinputs",
    "loradeck.core.evaluation.valloss",
    "loradeck.core.evaluation.generate",
    "loradeck.core.evaluation.weights",
    "loradeck.core.evaluation.evaluator",
    "loradeck.core.evaluation.run",
]


def test_light_evaluation_modules_load_no_heavy_packages() -> None:
    code = "\n".join(f"import {m}" for m in LIGHT_MODULES)
    code += "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    roots = {name.split(".")[0] for name in json.loads(out.stdout.strip().splitlines()[-1])}
    # numpy, Pillow and huggingface_hub are heavy too: `loradeck results` must not need them.
    unwanted = roots & {*HEAVY, "numpy", "PIL", "huggingface_hub"}
    assert not unwanted, f"loaded by the light evaluation modules: {sorted(unwanted)}"


_IMPORT = re.compile(r"^\s*(?:import|from)\s+(torch|torchvision|open_clip|torchmetrics)\b", re.M)


def test_only_evaluation_code_and_the_demo_trainer_import_torch() -> None:
    offenders = []
    for folder in ("core", "tui"):
        for path in (REPO / folder).rglob("*.py"):
            if "evaluation" in path.relative_to(REPO).parts:
                continue
            if _IMPORT.search(path.read_text(encoding="utf-8")):
                offenders.append(str(path.relative_to(REPO)))
    assert not offenders, f"torch-family imports outside core/evaluation: {offenders}"

"""core stays headless and light: no Textual, no torch, where they must not load.

The static import-linter contract cannot see deferred imports; this runs the real imports.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "torchvision", "open_clip", "torchmetrics")

CORE_MODULES = [
    "loradeck.core.cli",
    "loradeck.core.models",
    "loradeck.core.settings",
    "loradeck.core.store",
    "loradeck.core.batch",
    "loradeck.core.submit",
    "loradeck.core.scheduler",
    "loradeck.core.gpu",
    "loradeck.core.executor",
    "loradeck.core.monitor",
    "loradeck.core.engine",
    "loradeck.core.headless",
    "loradeck.core.runtime",
    "loradeck.core.facade",
    "loradeck.core.jobmonitor",
    "loradeck.core.eta",
    "loradeck.core.clusterview",
    "loradeck.core.events",
    "loradeck.core.evaluation",
    "loradeck.core.evaluation.commands",
    "loradeck.core.executor.slurm",
    "loradeck.core.slurmmode",
]


def _loaded_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_core_imports_neither_textual_nor_torch() -> None:
    loaded = _loaded_after("\n".join(f"import {m}" for m in CORE_MODULES))
    roots = {name.split(".")[0] for name in loaded}
    assert "textual" not in roots
    assert "loradeck" in roots and not any(n.startswith("loradeck.tui") for n in loaded)
    assert not roots & set(HEAVY), f"heavy modules loaded by core: {sorted(roots & set(HEAVY))}"


def test_cli_main_help_stays_light() -> None:
    loaded = _loaded_after(
        "from loradeck.core import cli\n"
        "try:\n    cli.main(['--help'])\nexcept SystemExit:\n    pass"
    )
    roots = {name.split(".")[0] for name in loaded}
    assert not roots & {*HEAVY, "textual"}

"""core stays headless and light: no Textual, no torch, where they must not load.

The static import-linter contract cannot see deferred imports; this runs the real imports.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

HEAVY = ("torch", "torchvision", "open_clip", "torchmetrics")

#: The evaluation package's modules may import torch (lazily or not); the package itself
#: and its command-line entry must not.
LIGHT_EVALUATION = ("loradeck.core.evaluation", "loradeck.core.evaluation.commands")


def _core_modules() -> list[str]:
    """Every module of loradeck.core, new ones included, but the evaluation package's
    scoring modules."""
    import loradeck.core

    names = [info.name for info in pkgutil.walk_packages(loradeck.core.__path__, "loradeck.core.")]
    light = [
        name
        for name in names
        if not name.startswith("loradeck.core.evaluation.") or name in LIGHT_EVALUATION
    ]
    assert "loradeck.core.engine" in light and "loradeck.core.evaluation" in light
    return sorted(light)


CORE_MODULES = _core_modules()


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

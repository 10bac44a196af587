"""The package installs as designed: core -> loradeck.core, tui -> loradeck.tui, data shipped."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

MAPPED = {
    "core": "loradeck.core",
    "tui": "loradeck.tui",
    "configs": "loradeck.configs",
    "themes": "loradeck.themes",
}


def _package_folders() -> set[str]:
    found: set[str] = set()
    for folder, package in MAPPED.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            if "__pycache__" in rel.parts:
                continue
            found.add(".".join([package, *rel.parts]) if rel.parts else package)
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    missing = _package_folders() - listed
    assert not missing, (
        f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"
    )


@pytest.mark.slow
def test_wheel_contains_code_configs_and_themes(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("loradeck-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "loradeck/core/cli.py",
        "loradeck/core/models.py",
        "loradeck/tui/__init__.py",
        "loradeck/configs/demo/batch.toml",
        "loradeck/configs/demo/toy_lora.py",
    ):
        assert required in names, f"{required} missing from the wheel"
    themes = [n for n in names if n.startswith("loradeck/themes/") and n.endswith(".toml")]
    shipped = sorted(p.name for p in (REPO / "themes").glob("*.toml"))
    assert sorted(Path(n).name for n in themes) == shipped
    assert not any("tests/" in n or n.startswith("bench/") for n in names)

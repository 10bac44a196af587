"""SVG snapshots of every screen at 120x40 and 80x24, on the fixed scene.

The scene has a fixed clock, fixed jobs, GPU history and events, and times are shown in
UTC, so the pictures are exact. After a deliberate change of the look, review the new
pictures and accept them with ``pytest tests/test_tui_snapshots.py --snapshot-update``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from textual.pilot import Pilot
from tui_helpers import settle

from loradeck.tui.scene import scene_app

SIZES = {"wide": (120, 40), "small": (80, 24)}


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def _keys(*keys: str) -> Any:
    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        for key in keys:
            await pilot.press(key)
            await settle(pilot)

    return run_before


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    ("screen", "keys"),
    [("jobs", ()), ("gpus", ("2",)), ("results", ("3",)), ("events", ("4",))],
    ids=["jobs", "gpus", "results", "events"],
)
def test_screen(snap_compare: Any, screen: str, keys: tuple[str, ...], size: str) -> None:
    assert snap_compare(scene_app(), terminal_size=SIZES[size], run_before=_keys(*keys))


def test_job_screen(snap_compare: Any) -> None:
    assert snap_compare(scene_app(), terminal_size=(120, 40), run_before=_keys("enter"))


def test_help_screen(snap_compare: Any) -> None:
    assert snap_compare(scene_app(), terminal_size=(80, 24), run_before=_keys("question_mark"))


@pytest.mark.parametrize("theme", ["loradeck-light", "loradeck-high-contrast", "loradeck-ansi"])
def test_themes(snap_compare: Any, theme: str) -> None:
    assert snap_compare(scene_app(theme=theme), terminal_size=(120, 40), run_before=_keys())


@pytest.mark.parametrize("size", SIZES)
def test_gpus_screen_in_slurm_mode(snap_compare: Any, size: str) -> None:
    """The GPU screen shows the cluster's nodes (issue 8)."""
    app = scene_app(slurm=True)
    assert snap_compare(app, terminal_size=SIZES[size], run_before=_keys("2"))

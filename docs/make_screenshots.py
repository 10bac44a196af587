"""Draw the README's screenshots of the TUI (Jobs and GPUs screens) from the fixed scene.

    .venv/bin/python docs/make_screenshots.py

writes ``docs/tui-jobs.svg``, ``docs/tui-gpus.svg`` and ``docs/tui-gpus-slurm.svg`` (the
GPU screen in Slurm mode: the cluster's nodes), 120x40, times in UTC. The scene is
made-up data (:mod:`loradeck.tui.scene`): the same on every run.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from loradeck.tui.app import LoradeckApp
from loradeck.tui.scene import scene_app

HERE = Path(__file__).resolve().parent
SIZE = (120, 40)


async def _settled(app: LoradeckApp, pilot: Pilot[Any]) -> None:
    while not (app.deck.loaded and app.deck.machine is not None):
        await pilot.pause(0.05)
    for _ in range(3):
        await app.workers.wait_for_complete()
        await pilot.pause()


async def main() -> None:
    os.environ["TZ"] = "UTC"
    time.tzset()
    app = scene_app()
    async with app.run_test(size=SIZE) as pilot:
        await _settled(app, pilot)
        app.save_screenshot(str(HERE / "tui-jobs.svg"))
        await pilot.press("2")
        await _settled(app, pilot)
        app.save_screenshot(str(HERE / "tui-gpus.svg"))
    slurm = scene_app(slurm=True)
    async with slurm.run_test(size=SIZE) as pilot:
        await _settled(slurm, pilot)
        await pilot.press("2")
        await _settled(slurm, pilot)
        slurm.save_screenshot(str(HERE / "tui-gpus-slurm.svg"))
    print(f"wrote {HERE / 'tui-jobs.svg'}, {HERE / 'tui-gpus.svg'}, {HERE / 'tui-gpus-slurm.svg'}")


if __name__ == "__main__":
    asyncio.run(main())

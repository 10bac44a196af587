"""Opening the TUI never loads torch or open_clip (the static import graph cannot see
deferred imports, so this runs the app for real in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "open_clip", "torchmetrics")

SCRIPT = """
import asyncio, json, sys
from pathlib import Path
from loradeck.core.facade import LiveFacade
from loradeck.core.home import Home
from loradeck.core.settings import Settings
from loradeck.tui.app import LoradeckApp

async def main():
    home = Home.open(Path(sys.argv[1]))
    facade = LiveFacade(home, Settings(), gpus="sim:4", tmux_session="imports",
                        tmux_socket=sys.argv[2])
    app = LoradeckApp(facade, environ={})
    async with app.run_test(size=(120, 40)) as pilot:
        while not (app.deck.loaded and app.deck.machine is not None):
            await pilot.pause(0.05)
        for key in ("2", "3", "4", "1", "question_mark", "escape", "t"):
            await pilot.press(key)
        await app.workers.wait_for_complete()
        await pilot.press("q")
        while not app.closed:
            await pilot.pause(0.05)
    print(json.dumps(sorted(sys.modules)))

asyncio.run(main())
"""


@pytest.mark.slow
def test_opening_the_app_imports_neither_torch_nor_open_clip(tmp_path: Path) -> None:
    socket = f"loradeck-imports-{uuid.uuid4().hex[:8]}"
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(tmp_path / "home"), socket],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    roots = {name.split(".")[0] for name in loaded}
    assert "textual" in roots and "loradeck" in roots  # the app really ran
    assert not roots & set(HEAVY), f"heavy modules loaded: {sorted(roots & set(HEAVY))}"

"""Moving between the main screens, fast.

The four main screens are Textual modes: each is built on its first visit and kept, so
a later visit only lays it out and draws it. Two things make the difference between a
switch that answers in a frame and one that takes a tenth of a second or more:

* Textual holds back the frame after a mode switch for 50 ms, to hide a screen that is
  still being composed. A screen that was built already has nothing to hide, so the
  app asks for no delay then (:attr:`Navigator.quick`, read by ``delay_update``).
* Building a screen (composing, mounting and styling its widgets) costs more than
  drawing it. :meth:`Navigator.build_hidden` starts building the screens not yet shown
  once the app has its first data, without showing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.app import App


class Navigator:
    """Which main screens are built, and switching between them."""

    def __init__(self, app: App[Any], modes: Sequence[str]) -> None:
        self.app = app
        self.modes = tuple(modes)
        self.built: set[str] = set()
        self.quick = False
        """True while switching to a built screen (no frame delay needed)."""
        self.stopped = False
        """Set when the app is quitting: no more screens are built."""

    def show(self, mode: str) -> None:
        """Show the main screen of ``mode``."""
        if self.app.current_mode == mode:
            return
        self.quick = mode in self.built
        try:
            self.app.switch_mode(mode)
        finally:
            self.quick = False
        self.built.add(mode)

    def step(self, step: int) -> None:
        """Show the next (``step`` 1) or previous (-1) main screen."""
        current = self.app.current_mode
        index = self.modes.index(current) if current in self.modes else 0
        self.show(self.modes[(index + step) % len(self.modes)])

    def build_hidden(self) -> None:
        """Start building every main screen not built yet, unseen (see the module
        docstring). Each is made current and the shown one current again in this one
        call, with the display held: no frame, key or event comes in between, so
        nothing but the hidden screens' own composing (in their own tasks) follows."""
        if self.stopped or not self.app.is_running:
            return
        shown = self.app.current_mode
        self.built.add(shown)
        missing = [mode for mode in self.modes if mode not in self.built]
        if not missing:
            return
        self.quick = True
        try:
            with self.app.batch_update():
                for mode in missing:
                    self.app.switch_mode(mode)
                    self.app.switch_mode(shown)
                    self.built.add(mode)
        finally:
            self.quick = False

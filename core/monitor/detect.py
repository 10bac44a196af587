"""Which trainer wrote this log: told from its first recognisable line.

:func:`detect_preset` looks at one line:

* kohya: a ``steps:`` bar with ``avr_loss``, ``running training / 学習開始``,
  ``epoch is incremented``, ``import network module``, or a rich source column
  ``train_network.py:123`` / ``train_util.py:123`` (also sdxl_/flux_/sd3_ scripts);
* ai-toolkit: ``# Running job:`` or a bar postfix ``lr: 1.0e-04 loss: ...``;
* diffusers: ``***** Running training *****``, a ``Steps:`` bar, or accelerate's log
  prefix ``10/20/2023 15:57:47 - INFO - name - ``;
* OneTrainer: a bar postfix with ``smooth loss=``;
* jsonl: a line that is a JSON object with a known metric key.

:class:`AutoParser` parses with the generic parser until a line decides, then hands
that line and everything after it to the preset (keeping the job name for ai-toolkit).
The preset first reads the last lines silently (:data:`REPLAY_LINES`) to pick up its
state, such as OneTrainer's epoch bar or kohya's totals; what they said was already
reported by the generic parser. It keeps looking for the whole run, so a long preamble
(kohya caches latents for minutes before its first bar) does not settle it on generic.
"""

from __future__ import annotations

import json
import re
from collections import deque

from loradeck.core.monitor.aitoolkit import AiToolkitParser
from loradeck.core.monitor.base import BaseParser
from loradeck.core.monitor.diffusers import DiffusersParser
from loradeck.core.monitor.generic import GenericParser, JsonlParser
from loradeck.core.monitor.kohya import KohyaParser
from loradeck.core.monitor.onetrainer import OneTrainerParser
from loradeck.core.monitor.results import ParseBatch, ParseResult, merge_results
from loradeck.core.monitor.splitter import SEP_RE, clean_line

_KOHYA_SOURCE_RE = re.compile(
    r"\b(?:train_network|train_util|(?:sdxl|flux|sd3|lumina|hunyuan_image)_train(?:_network)?"
    r"|train_db|fine_tune)\.py:\d+\b"
)
_AITOOLKIT_BAR_RE = re.compile(r"\| \d+/\d+ \[[^\]]*, lr: [-+\d.eE]+ \w*loss\w*: ")
_ACCELERATE_RE = re.compile(r"^\d\d/\d\d/\d{4} \d\d:\d\d:\d\d - (?:INFO|WARNING|ERROR|DEBUG) - ")
#: Lines the detected preset reads silently before it takes over.
REPLAY_LINES = 200
_JSON_KEYS = ("step", "global_step", "loss", "train_loss", "lr", "learning_rate", "epoch")


def detect_preset(line: str) -> str | None:
    """The preset this line proves, or None."""
    if "steps:" in line and "avr_loss" in line:
        return "kohya"
    if "学習開始" in line or "epoch is incremented" in line or "import network module" in line:
        return "kohya"
    if ".py:" in line and _KOHYA_SOURCE_RE.search(line):
        return "kohya"
    if "# Running job:" in line:
        return "ai-toolkit"
    if "lr: " in line and _AITOOLKIT_BAR_RE.search(line):
        return "ai-toolkit"
    if "***** Running training *****" in line:
        return "diffusers"
    if line.startswith("Steps:") and "%|" in line:
        return "diffusers"
    if " - " in line and _ACCELERATE_RE.match(line):
        return "diffusers"
    if "smooth loss=" in line:
        return "onetrainer"
    stripped = line.strip()
    if stripped.startswith("{") and stripped.endswith("}") and '"' in stripped:
        try:
            value = json.loads(stripped)
        except (ValueError, RecursionError):
            return None
        if isinstance(value, dict) and any(key in value for key in _JSON_KEYS):
            return "jsonl"
    return None


def preset_parser(name: str, job_name: str | None) -> BaseParser:
    """A fresh preset parser by its canonical name."""
    if name == "kohya":
        return KohyaParser()
    if name == "ai-toolkit":
        return AiToolkitParser(job_name)
    if name == "diffusers":
        return DiffusersParser()
    if name == "onetrainer":
        return OneTrainerParser()
    if name == "jsonl":
        return JsonlParser()
    return GenericParser()


class AutoParser(BaseParser):
    """Generic until a line says which trainer this is; then that trainer's preset."""

    name = "auto"

    def __init__(self, job_name: str | None = None) -> None:
        super().__init__()
        self._job_name = job_name
        self._generic = GenericParser()
        self._preset: BaseParser | None = None
        self._recent: deque[str] = deque(maxlen=REPLAY_LINES)

    @property
    def detected(self) -> str | None:
        """The preset in use, once detected."""
        return None if self._preset is None else self._preset.name

    @property
    def current(self) -> BaseParser:
        return self._generic if self._preset is None else self._preset

    def parse_line(self, line: str) -> ParseResult | None:
        if self._preset is None:
            found = detect_preset(line)
            if found is None:
                self._recent.append(line)
                return self._sync(self._generic.parse_line(line))
            preset, closed = self._switch(found)
            return self._sync(merge_results(closed, preset.parse_line(line)))
        return self._sync(self._preset.parse_line(line))

    def flush(self) -> ParseResult | None:
        return self.current.flush()

    def scan_block(self, block: bytes, out: ParseBatch) -> None:
        if self._preset is not None:
            self._preset.scan_block(block, out)
            self.step = self._preset.step
            return
        start = 0
        for match in SEP_RE.finditer(block):
            line = clean_line(block[start : match.start()])
            found = detect_preset(line)
            if found is not None:
                preset, closed = self._switch(found)
                if closed is not None:
                    out.append(closed)
                preset.scan_block(block[start:], out)
                self.step = preset.step
                return
            self._recent.append(line)
            result = self._generic.parse_line(line)
            if result is not None:
                out.append(result)
            start = match.end()
        self.step = self._generic.step

    def _switch(self, name: str) -> tuple[BaseParser, ParseResult | None]:
        closed = self._generic.flush()
        preset = preset_parser(name, self._job_name)
        for line in self._recent:
            preset.parse_line(line)  # state only: the generic parser reported these
        preset.flush()
        preset.step = self._generic.step if preset.step is None else preset.step
        self._recent.clear()
        self._preset = preset
        return preset, closed

    def _sync(self, result: ParseResult | None) -> ParseResult | None:
        self.step = self.current.step
        return result

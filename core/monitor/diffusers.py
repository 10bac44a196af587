"""huggingface diffusers example scripts (train_text_to_image_lora.py, train_dreambooth_lora.py...).

* Log lines ``10/20/2023 15:57:47 - INFO - __main__ - message`` (accelerate's logger);
  the prefix is dropped before matching.
* ``***** Running training *****``, then ``  Num Epochs = 3`` and
  ``  Total optimization steps = 864`` -> totals.
* Training bar ``Steps:  70%|███…| 608/864 [17:50<19:15,  4.51s/it, loss=0.0717, lr=0.0001]``
  (``step_loss=`` in the LoRA scripts). A log line often follows the bar's ``]`` with no
  break in between; it is parsed as its own line.
* ``Saved state to /out/checkpoint-608`` -> ``checkpoint_saved`` (step from the folder
  name); accelerate's own ``Saving current state to ...`` is the same save, not counted.
* ``Running validation...`` -> ``sample_generated`` (validation images) at the current step.
"""

from __future__ import annotations

import re

from loradeck.core.monitor.bars import fast_bar_regex, first_of, parse_pairs
from loradeck.core.monitor.base import BaseParser, Record, int_or_none
from loradeck.core.monitor.results import Item, LogEvent, Metrics, ParseResult

_FAST_RE = fast_bar_regex(b"Steps")
_PREFIX_RE = re.compile(
    r"^\d\d/\d\d/\d{4} \d\d:\d\d:\d\d - (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) - [^ ]+ - "
)
_TOTAL_STEPS_RE = re.compile(r"^Total optimization steps = (\d+)")
_NUM_EPOCHS_RE = re.compile(r"^Num Epochs = (\d+)")
_SAVED_RE = re.compile(r"^Saved state to (\S.*)$")
_CHECKPOINT_STEP_RE = re.compile(r"checkpoint-(\d+)/?$")
_LOSS_KEYS = ("loss", "step_loss", "train_loss")


class DiffusersParser(BaseParser):
    """diffusers / accelerate example scripts."""

    name = "diffusers"

    def __init__(self) -> None:
        super().__init__()
        self._collapse_redraws = True

    @property
    def fast_bar_re(self) -> re.Pattern[bytes]:
        return _FAST_RE

    def _on_bar(
        self,
        desc: bytes | None,
        n: bytes,
        total: bytes | None,
        remaining: bytes | None,
        rate: bytes,
        postfix: bytes | None,
    ) -> Item | None:
        if desc != b"Steps":
            return None
        pairs = parse_pairs(postfix) if postfix else {}
        loss = first_of(pairs, _LOSS_KEYS)
        step = int(n)
        self.step = step
        row = (step, int_or_none(total), None, None, loss, pairs.get("lr"), self._rate(rate),
               remaining, None)  # fmt: skip
        return self._row_result(row, self._loss_event(loss, step))

    def _on_message(self, record: Record) -> ParseResult | None:
        text = _PREFIX_RE.sub("", record.text, count=1).strip()
        if text.startswith("Total optimization steps"):
            match = _TOTAL_STEPS_RE.match(text)
            if match is not None:
                return ParseResult(Metrics(total_steps=int(match[1])))
        if text.startswith("Num Epochs"):
            match = _NUM_EPOCHS_RE.match(text)
            if match is not None:
                return ParseResult(Metrics(total_epochs=int(match[1])))
        if text.startswith("Saved state to"):
            match = _SAVED_RE.match(text)
            if match is not None:
                path = match[1].strip()
                folder = _CHECKPOINT_STEP_RE.search(path)
                step = int(folder[1]) if folder is not None else self.step
                return ParseResult(
                    events=(LogEvent("checkpoint_saved", path=path, step=step, text=text),)
                )
        if text.startswith("Running validation"):
            return ParseResult(events=(LogEvent("sample_generated", step=self.step, text=text),))
        return None

    def _opens_records(self) -> bool:
        return False

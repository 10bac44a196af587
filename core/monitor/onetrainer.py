"""Nerogar/OneTrainer (modules/trainer/GenericTrainer.py).

* Two bars: ``epoch`` (n = epochs done, total = epochs) and ``step`` (n = step within the
  epoch, total = the epoch's length) with postfix ``loss=..., smooth loss=...``. The
  global step is ``epochs done * epoch length + n`` and the total ``epochs * epoch
  length`` once the epoch bar has been seen (the step bar alone gives the in-epoch
  count); the ETA is what is left at the current speed.
* ``Saving /workspace/save/...safetensors`` -> ``checkpoint_saved``.
* ``validation_step`` bars carry no loss and are ignored. NaN loss makes OneTrainer raise
  ``RuntimeError: Training loss became NaN``, an ``error`` event; a ``nan`` in the
  postfix is a ``nonfinite_loss`` event first.
"""

from __future__ import annotations

import re

from loradeck.core.monitor.bars import FAST_ANY_BAR_RE, parse_pairs
from loradeck.core.monitor.base import BaseParser, Record, int_or_none
from loradeck.core.monitor.results import Item, LogEvent, ParseResult, clock_seconds

_SAVING_RE = re.compile(r"^Saving (\S.*)$")


class OneTrainerParser(BaseParser):
    """Nerogar/OneTrainer."""

    name = "onetrainer"

    def __init__(self) -> None:
        super().__init__()
        self._epochs_done: int | None = None
        self._epochs: int | None = None
        self._collapse_redraws = True

    @property
    def fast_bar_re(self) -> re.Pattern[bytes]:
        return FAST_ANY_BAR_RE

    def _epoch(self) -> int | None:
        if self._epochs_done is None:
            return None
        current = self._epochs_done + 1
        return min(current, self._epochs) if self._epochs else current

    def _on_bar(
        self,
        desc: bytes | None,
        n: bytes,
        total: bytes | None,
        remaining: bytes | None,
        rate: bytes,
        postfix: bytes | None,
    ) -> Item | None:
        if desc == b"epoch":
            self._epochs_done = int(n)
            self._epochs = int_or_none(total)
            return (None, None, self._epoch(), self._epochs, None, None, None, None, None)
        if desc != b"step":
            return None
        pairs = parse_pairs(postfix) if postfix else {}
        loss = pairs.get("loss")
        in_epoch = int(n)
        length = int_or_none(total)
        speed = self._rate(rate)
        step, total_steps = in_epoch, length
        eta: float | bytes | None = remaining
        if self._epochs_done is not None and length:
            step = self._epochs_done * length + in_epoch
            total_steps = self._epochs * length if self._epochs else None
            if total_steps is not None and speed:
                eta = round(max(0, total_steps - step) / speed, 1)
            elif remaining is not None:
                eta = clock_seconds(remaining)
        self.step = step
        row = (step, total_steps, self._epoch(), self._epochs, loss, None, speed, eta, None)
        return self._row_result(row, self._loss_event(loss, step))

    def _on_message(self, record: Record) -> ParseResult | None:
        text = record.text
        if text.startswith("Saving "):
            match = _SAVING_RE.match(text)
            if match is not None:
                path = match[1].strip()
                return ParseResult(
                    events=(LogEvent("checkpoint_saved", path=path, step=self.step, text=text),)
                )
        return None

    def _opens_records(self) -> bool:
        return False

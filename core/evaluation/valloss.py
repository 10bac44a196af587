"""The trainer's validation loss, read from the job's log, per checkpoint.

kohya prints ``epoch 2/80`` when an epoch starts and its validation bar ends with
``val_epoch_avg_loss=0.0123``; other trainers print ``val_loss=``, ``validation_loss:`` or
TensorBoard-style ``loss/validation...``. Each value is recorded with the epoch and the
training step current when it was printed; a checkpoint gets the last value of its epoch,
else the last value at or before its step, else (the final save) the last value of all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_EPOCH = re.compile(r"^\s*epoch (\d+)/(\d+)\s*$", re.IGNORECASE)
_STEP_BAR = re.compile(r"^\s*(?:steps?)\s*:\s*\d+%\|.*?\|\s*(\d+)/(\d+)", re.IGNORECASE)
_VAL = re.compile(
    r"(?:val_epoch_avg_loss|val_avg_loss|val_loss|validation_loss|loss/validation[\w/]*)"
    r"\s*[=:]\s*(?P<value>[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf))",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ValLoss:
    """One validation loss printed in the log."""

    value: float
    epoch: int | None
    step: int | None


def _lines(path: Path, chunk: int = 1 << 20) -> Iterator[str]:
    """The log's lines, split on ``\\n`` and ``\\r`` (progress bars redraw with ``\\r``)."""
    with path.open("r", encoding="utf-8", errors="replace", newline="") as handle:
        rest = ""
        while block := handle.read(chunk):
            parts = re.split(r"[\r\n]", rest + block)
            rest = parts.pop()
            yield from parts
        if rest:
            yield rest


def read_val_losses(path: Path) -> list[ValLoss]:
    """Every validation loss in the log at ``path``, in order; [] if it has none."""
    losses: list[ValLoss] = []
    epoch: int | None = None
    step: int | None = None
    for raw in _lines(path):
        line = _ANSI.sub("", raw)
        if match := _EPOCH.match(line):
            epoch = int(match[1])
            continue
        if match := _STEP_BAR.match(line):
            step = int(match[1])
        for found in _VAL.finditer(line):
            value = float(found["value"])
            losses.append(ValLoss(value, epoch, step))
    return losses


def val_loss_for(
    losses: list[ValLoss], *, epoch: int | None, step: int | None, final: bool
) -> float | None:
    """The validation loss that belongs to a checkpoint saved at ``epoch``/``step``."""
    finite = [loss for loss in losses if math.isfinite(loss.value)]
    if epoch is not None:
        same = [loss for loss in finite if loss.epoch == epoch]
        if same:
            return same[-1].value
    if step is not None:
        before = [loss for loss in finite if loss.step is not None and loss.step <= step]
        if before:
            return before[-1].value
    if final and finite:
        return finite[-1].value
    return None

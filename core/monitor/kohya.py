"""kohya-ss/sd-scripts (train_network.py and friends).

* Training bar ``steps:  45%|████▌     | 450/1000 [05:01<06:08,  1.49it/s, avr_loss=0.0812]``
  -> step, total steps, speed, ETA and loss (``avr_loss``, the running average; with
  ``--scale_weight_norms`` other keys come first). ``avr_loss=nan`` -> a NaN loss and a
  ``nonfinite_loss`` event.
* Validation bars ``validation steps`` / ``epoch validation steps`` with
  ``val_avg_loss=`` / ``val_epoch_avg_loss=`` -> validation loss; also lines
  ``validation loss: 0.1`` and ``val_loss=`` / ``avr_val_loss=`` forms.
* ``epoch 2/80`` (printed between blank lines) and the rich log line
  ``epoch is incremented. current_epoch: 1, epoch: 2`` -> epoch.
* ``saving checkpoint: /out/name-000002.safetensors`` -> ``checkpoint_saved`` (also
  ``saving model:`` and ``save trained model as ... to``); a path folded by rich onto the
  next lines is joined back.
* ``generating sample images at step / サンプル画像生成 ステップ: 250`` -> ``sample_generated``.
* ``total optimization steps / 学習ステップ数: 1000`` and ``num epochs / epoch数: 80``
  -> totals before the first bar.

kohya logs through rich, which wraps a long message onto lines indented to the message
column; :class:`~loradeck.core.monitor.base.BaseParser` joins them.
"""

from __future__ import annotations

import math
import re

from loradeck.core.monitor.bars import fast_bar_regex, first_of, parse_pairs
from loradeck.core.monitor.base import BaseParser, Record, int_or_none, metrics_result
from loradeck.core.monitor.results import Item, LogEvent, Metrics, ParseResult, metrics_from_row

_FAST_RE = fast_bar_regex(b"steps")
_INF = math.inf
_MISSING = -1.0  # not a rate: rate_per_second never gives a negative
_LOSS_KEYS = ("avr_loss", "loss", "current_loss")
_VAL_KEYS = ("val_avg_loss", "val_epoch_avg_loss", "val_loss", "avr_val_loss", "validation_loss")
_NUM = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf|-inf))"

_EPOCH_RE = re.compile(r"epoch (\d+)/(\d+)")
_EPOCH_INCREMENTED_RE = re.compile(r"epoch is incremented\. current_epoch: \d+, epoch: (\d+)")
_SAVED_AS_RE = re.compile(r"save trained model as .+? to\s+(\S.*)")
_SAMPLE_RE = re.compile(r"generating sample images at step[^:]*:\s*(\d+)")
_TOTAL_STEPS_RE = re.compile(r"total optimization steps[^:]*:\s*(\d+)")
_NUM_EPOCHS_RE = re.compile(r"num epochs[^:]*:\s*(\d+)")
_VAL_RE = re.compile(
    r"(?i)\b(?:validation loss|val_loss|avr_val_loss|val_avg_loss|val_epoch_avg_loss)\s*[:=]\s*"
    + _NUM
)


class KohyaParser(BaseParser):
    """kohya-ss/sd-scripts."""

    name = "kohya"

    def __init__(self) -> None:
        super().__init__()
        self._total_raw: bytes | None = None
        self._total: int | None = None
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
        if desc == b"steps":
            # The hot path of the bulk parser: one call per bar redraw.
            step = int(n)
            if total != self._total_raw:
                self._total_raw, self._total = total, int_or_none(total)
            loss: float | None = None
            if postfix:
                if postfix.startswith(b"avr_loss=") and b"," not in postfix:
                    try:
                        loss = float(postfix[9:])
                    except ValueError:
                        loss = None
                else:
                    loss = first_of(parse_pairs(postfix), _LOSS_KEYS)
            self.step = step
            speed = self._rates.get(rate, _MISSING)
            if speed is _MISSING:
                speed = self._rate(rate)
            row = (step, self._total, None, None, loss, None, speed, remaining, None)
            if (loss is not None and not -_INF < loss < _INF) or self._nonfinite:
                event = self._loss_event(loss, step)
                if event is not None:
                    return ParseResult(metrics_from_row(row), (event,))
            return row
        if desc is not None and desc.endswith(b"validation steps") and postfix:
            val_loss = first_of(parse_pairs(postfix), _VAL_KEYS)
            if val_loss is not None:
                return ParseResult(Metrics(val_loss=val_loss))
        return None

    def _on_message(self, record: Record) -> ParseResult | None:
        text = record.text
        if text.startswith("epoch "):
            match = _EPOCH_RE.fullmatch(text)
            if match is not None:
                return ParseResult(Metrics(epoch=int(match[1]), total_epochs=int(match[2])))
        if "epoch is incremented" in text:
            match = _EPOCH_INCREMENTED_RE.search(text)
            if match is not None:
                return ParseResult(Metrics(epoch=int(match[1])))
        if text.startswith(("saving checkpoint:", "saving model:")):
            # A long path is folded by rich over several lines without spaces.
            path = record.unwrapped.partition(":")[2].strip()
            if path:
                return _saved(path, self.step, text)
        if text.startswith("save trained model as"):
            match = _SAVED_AS_RE.match(text)
            if match is not None:
                return _saved(match[1].strip(), self.step, text)
        if "sample" in text:
            match = _SAMPLE_RE.search(text)
            if match is not None:
                step = int(match[1])
                return ParseResult(events=(LogEvent("sample_generated", step=step, text=text),))
        if "total optimization steps" in text:
            match = _TOTAL_STEPS_RE.search(text)
            if match is not None:
                return ParseResult(Metrics(total_steps=int(match[1])))
        if "num epochs" in text:
            match = _NUM_EPOCHS_RE.search(text)
            if match is not None:
                return ParseResult(Metrics(total_epochs=int(match[1])))
        if "val" in text:
            match = _VAL_RE.search(text)
            if match is not None:
                val_loss = float(match[1])
                return metrics_result(Metrics(val_loss=val_loss))
        return None


def _saved(path: str, step: int | None, text: str) -> ParseResult:
    return ParseResult(events=(LogEvent("checkpoint_saved", path=path, step=step, text=text),))

"""Trainers without a preset: generic pairs, JSON lines, and user regexes.

:class:`GenericParser` reads

* JSON objects on a line (``{"step": 10, "loss": 0.1}``; also the Python-dict lines the
  Hugging Face Trainer prints, ``{'loss': 0.1, 'learning_rate': 5e-05, 'epoch': 0.5}``);
* ``key=value`` / ``key: value`` pairs for known keys: step, global_step, iter,
  iteration -> step; epoch; loss, train_loss, avr_loss, avg_loss, step_loss -> loss;
  lr, learning_rate -> lr; val_loss, validation_loss, eval_loss -> val_loss;
  total_steps, max_steps -> total steps;
* ``step 10/100``, ``Step [10/100]``, ``epoch 2/80``, ``Epoch [2/80]``;
* tqdm bars: a bar described ``epoch...`` gives the epoch (its count of finished
  epochs, plus one); another bar gives the step
  when its description says step/train/iter or its postfix has a loss (so that caching
  and sampling bars do not move the step);
* ``saving/saved ... checkpoint|model|weights|state ...: PATH`` (or ``to PATH``) ->
  ``checkpoint_saved``; ``generating sample(s)`` -> ``sample_generated``.

A fractional JSON epoch (0.5) is the first epoch, half done: epoch 1.

:class:`UserRegexParser` adds the regexes from settings (``[[parsers]]`` with ``name``
and ``pattern``) on top of any parser. Named groups give the fields: step, total_steps,
epoch, total_epochs, loss, lr, it_per_s, s_per_it, eta_s, val_loss; a ``checkpoint``
group makes a ``checkpoint_saved`` event with that path and a ``sample`` group a
``sample_generated`` event.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Sequence
from typing import Any

from loradeck.core.errors import ValidationError
from loradeck.core.monitor.bars import FAST_ANY_BAR_RE, first_of, parse_pairs
from loradeck.core.monitor.base import BaseParser, Record, int_or_none, metrics_result
from loradeck.core.monitor.results import Item, LogEvent, Metrics, ParseResult
from loradeck.core.settings import UserRegex

_STEP_KEYS = ("step", "global_step", "iter", "iteration")
_LOSS_KEYS = ("loss", "train_loss", "avr_loss", "avg_loss", "step_loss")
_LR_KEYS = ("lr", "learning_rate")
_VAL_KEYS = ("val_loss", "validation_loss", "eval_loss")
_TOTAL_KEYS = ("total_steps", "max_steps")
_NUM = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|NaN|inf|Inf)"
_KEY_RE = re.compile(
    r"(?<![\w/.])(global_step|step|iteration|iter|epoch|train_loss|avr_loss|avg_loss|step_loss"
    r"|val_loss|validation_loss|eval_loss|loss|learning_rate|lr|total_steps|max_steps)"
    r"\s*[=:]\s*(" + _NUM + r")(?:\s*/\s*(\d+))?(?![\w.])",
    re.IGNORECASE,
)
_COUNT_RE = re.compile(r"(?i)\b(step|epoch|iter(?:ation)?)\s*\[?\s*(\d+)\s*/\s*(\d+)\s*\]?")
_CHECKPOINT_RE = re.compile(
    r"(?i)\b(?:(?:saving|saved)\b[^:]*?\b(?:checkpoint|model|weights|state)"
    r"|(?:checkpoint|model|weights|state)\b[^:]*?\bsaved?)\b[^:]*?(?::|\bto\b|\bin\b)\s*"
    r"(\S*[/\\]\S*|\S+\.(?:safetensors|ckpt|pt|pth|bin))\s*$"
)
_SAMPLE_RE = re.compile(r"(?i)\bgenerat(?:ing|ed)\b.*\bsamples?\b")
_STEP_WORDS = (b"step", b"train", b"iter", b"optim")
_KEY_MAP: dict[str, str] = {
    **dict.fromkeys(_STEP_KEYS, "step"),
    **dict.fromkeys(_LOSS_KEYS, "loss"),
    **dict.fromkeys(_LR_KEYS, "lr"),
    **dict.fromkeys(_VAL_KEYS, "val_loss"),
    **dict.fromkeys(_TOTAL_KEYS, "total_steps"),
    "epoch": "epoch",
}


class GenericParser(BaseParser):
    """Any trainer: JSON lines, known key/value pairs, counts and tqdm bars."""

    name = "generic"

    @property
    def fast_bar_re(self) -> re.Pattern[bytes]:
        return FAST_ANY_BAR_RE

    def _on_bar(
        self,
        desc: bytes | None,
        n: bytes,
        total: bytes | None,
        remaining: bytes | None,
        rate: bytes,
        postfix: bytes | None,
    ) -> Item | None:
        label = (desc or b"").lower()
        pairs = parse_pairs(postfix) if postfix else {}
        loss = first_of(pairs, _LOSS_KEYS)
        if b"epoch" in label and b"step" not in label:
            # A bar over epochs counts the finished ones; the current one is the next.
            epochs = int_or_none(total)
            epoch = int(n) + 1 if not epochs else min(int(n) + 1, epochs)
            return (None, None, epoch, epochs, loss, None, None, None, None)
        if loss is None and not any(word in label for word in _STEP_WORDS):
            return None
        step = int(n)
        self.step = step
        row = (step, int_or_none(total), None, None, loss, first_of(pairs, _LR_KEYS),
               self._rate(rate), remaining, first_of(pairs, _VAL_KEYS))  # fmt: skip
        return self._row_result(row, self._loss_event(loss, step))

    def _on_message(self, record: Record) -> ParseResult | None:
        text = record.text
        if text.startswith("{") and text.endswith("}"):
            values = _object(text)
            if values is not None:
                return self._observe(_json_fields(values), text)
        fields: dict[str, float] = {}
        if "=" in text or ":" in text:
            for key, value, total in _KEY_RE.findall(text):
                name = _KEY_MAP[key.lower()]
                fields.setdefault(name, float(value))
                if total and name in ("step", "epoch"):
                    fields.setdefault("total_epochs" if name == "epoch" else "total_steps",
                                      float(total))  # fmt: skip
        if "/" in text:
            for word, count, total in _COUNT_RE.findall(text):
                name = "epoch" if word.lower() == "epoch" else "step"
                fields.setdefault(name, float(count))
                fields.setdefault(
                    "total_epochs" if name == "epoch" else "total_steps", float(total)
                )
        result = self._observe(fields, text) if fields else None
        lowered = text.lower()
        if "sav" in lowered:
            match = _CHECKPOINT_RE.search(text)
            if match is not None:
                event = LogEvent("checkpoint_saved", path=match[1], step=self.step, text=text)
                return _with_event(result, event)
        if "generat" in lowered and "sample" in lowered and _SAMPLE_RE.search(text):
            return _with_event(result, LogEvent("sample_generated", step=self.step, text=text))
        return result

    def _observe(self, fields: dict[str, float], text: str) -> ParseResult | None:
        step = _whole(fields.get("step"))
        if step is not None:
            self.step = step
        metrics = Metrics(
            step=step,
            total_steps=_whole(fields.get("total_steps")),
            epoch=_epoch(fields.get("epoch")),
            total_epochs=_whole(fields.get("total_epochs")),
            loss=fields.get("loss"),
            lr=fields.get("lr"),
            val_loss=fields.get("val_loss"),
        )
        if metrics.is_empty:
            return None
        return metrics_result(metrics, self._loss_event(metrics.loss, self.step))


class JsonlParser(GenericParser):
    """Metrics written as JSON lines (``{"step": 10, "loss": 0.1}``), and anything generic."""

    name = "jsonl"


def _object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        if "'" not in text:
            return None
        try:
            value = ast.literal_eval(text)  # the HF Trainer prints Python dicts
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return None
    except RecursionError:
        return None
    return value if isinstance(value, dict) else None


def _json_fields(values: dict[str, Any]) -> dict[str, float]:
    fields: dict[str, float] = {}
    for key, value in values.items():
        name = _KEY_MAP.get(str(key).lower())
        if name is None or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        fields.setdefault(name, float(value))
    return fields


def _whole(value: float | None) -> int | None:
    if value is None or not math.isfinite(value) or abs(value) > 2**62:
        return None
    return int(value)


def _epoch(value: float | None) -> int | None:
    if value is None or not math.isfinite(value) or abs(value) > 2**62:
        return None
    return int(value) if value == int(value) else math.floor(value) + 1


def _with_event(result: ParseResult | None, event: LogEvent) -> ParseResult:
    if result is None:
        return ParseResult(events=(event,))
    return ParseResult(result.metrics, (*result.events, event))


# ---------------------------------------------------------------------------- user regexes

_INT_GROUPS = ("step", "total_steps", "epoch", "total_epochs")
_FLOAT_GROUPS = ("loss", "lr", "it_per_s", "s_per_it", "eta_s", "val_loss")
_EVENT_GROUPS = ("checkpoint", "sample")
USER_REGEX_GROUPS: tuple[str, ...] = _INT_GROUPS + _FLOAT_GROUPS + _EVENT_GROUPS


def compile_user_regexes(regexes: Sequence[UserRegex]) -> list[tuple[str, re.Pattern[str]]]:
    """Compile the user's regexes; every problem is reported, with the regex's name."""
    compiled: list[tuple[str, re.Pattern[str]]] = []
    problems: list[str] = []
    allowed = ", ".join(USER_REGEX_GROUPS)
    for index, item in enumerate(regexes):
        where = f"parsers[{index}] ({item.name!r})"
        try:
            pattern = re.compile(item.pattern)
        except re.error as err:
            problems.append(f"{where}: the pattern is not a valid regex: {err}")
            continue
        names = set(pattern.groupindex)
        unknown = sorted(names - set(USER_REGEX_GROUPS))
        if unknown:
            problems.append(
                f"{where}: unknown group name(s) {', '.join(unknown)}; use (?P<name>...) "
                f"with one of: {allowed}"
            )
        elif not names:
            problems.append(f"{where}: the pattern has no named group; use one of: {allowed}")
        else:
            compiled.append((item.name, pattern))
    if problems:
        raise ValidationError(problems, title="invalid log parser regex")
    return compiled


class UserRegexParser:
    """Another parser plus the user's regexes; what both find on a line is merged."""

    def __init__(self, inner: BaseParser, regexes: Sequence[UserRegex]) -> None:
        self.inner = inner
        self.name = inner.name
        self._regexes = compile_user_regexes(regexes)

    def parse_line(self, line: str) -> ParseResult | None:
        result = self.inner.parse_line(line)
        for name, pattern in self._regexes:
            match = pattern.search(line)
            if match is not None:
                result = _merge(result, self._from_match(name, match, line))
        return result

    def flush(self) -> ParseResult | None:
        return self.inner.flush()

    def _from_match(self, name: str, match: re.Match[str], line: str) -> ParseResult | None:
        groups = {k: v for k, v in match.groupdict().items() if v is not None}
        ints = {k: int_or_none(groups[k]) for k in _INT_GROUPS if k in groups}
        floats: dict[str, float | None] = {}
        for key in _FLOAT_GROUPS:
            if key in groups:
                try:
                    floats[key] = float(groups[key])
                except ValueError:
                    floats[key] = None
        per_it = floats.pop("s_per_it", None)
        if per_it and "it_per_s" not in floats:
            floats["it_per_s"] = 1.0 / per_it
        metrics = Metrics(**ints, **floats)  # type: ignore[arg-type]
        step = metrics.step if metrics.step is not None else self.inner.step
        if metrics.step is not None:
            self.inner.step = metrics.step
        events: list[LogEvent | None] = [self.inner._loss_event(metrics.loss, step)]
        text = f"{name}: {line.strip()}"
        if "checkpoint" in groups:
            events.append(
                LogEvent("checkpoint_saved", path=groups["checkpoint"], step=step, text=text)
            )
        if "sample" in groups:
            events.append(LogEvent("sample_generated", path=groups["sample"] or None, step=step,
                                   text=text))  # fmt: skip
        return metrics_result(metrics, *events)


def _merge(first: ParseResult | None, second: ParseResult | None) -> ParseResult | None:
    if first is None:
        return second
    return first.merged(second)

"""ostris/ai-toolkit (``python run.py config.yaml``).

* Training bar: tqdm with the job's name as description and the postfix
  ``lr: {lr:.1e}`` then `` {key}: {value:.3e}`` per loss:
  ``myrender-v2:   0%|          | 1/600 [00:10<1:42:50, 10.30s/it, lr: 1.0e-04 loss: 6.468e-01]``.
  Other bars share the stream (``Caching latents``, ``Generating Samples``): only the
  bar described by the job's name counts. The name is ``job_name`` until the log says
  ``# Running job: NAME`` (the config's name, which the bar shows); if no bar of that
  name has shown up, the first bar whose postfix starts with ``lr:`` and has a loss
  names it.
* ``Saving at step 500`` -> ``checkpoint_saved`` at step 500 (the line names no path:
  ``{training_folder}/{name}/{name}_{step:09d}.safetensors``, found by checkpoint
  discovery).
* A ``Generating Samples`` bar reaching its total -> ``sample_generated`` at the current step.
* ``Job stopped`` (Ctrl-C, which still exits 0) and ``Error running job: ...`` -> ``error``.
"""

from __future__ import annotations

import re

from loradeck.core.monitor.bars import FAST_ANY_BAR_RE, fast_bar_regex, parse_pairs
from loradeck.core.monitor.base import BaseParser, Record, int_or_none
from loradeck.core.monitor.results import Item, LogEvent, ParseResult

_SAVING_RE = re.compile(r"Saving at step (\d+)")
_JOB_RE = re.compile(r"#\s*Running job:\s*(.+?)\s*$")


def _looks_like_training(postfix: bytes | None) -> bool:
    return postfix is not None and postfix.startswith(b"lr:") and b"loss" in postfix


class AiToolkitParser(BaseParser):
    """ostris/ai-toolkit."""

    name = "ai-toolkit"

    def __init__(self, job_name: str | None = None) -> None:
        super().__init__()
        self._desc: bytes | None = None
        self._fast: re.Pattern[bytes] = FAST_ANY_BAR_RE
        self._set_job_name(job_name)
        self._sampling_done = True
        self._seen_own = False

    def _set_job_name(self, job_name: str | None) -> None:
        if job_name:
            self._desc = job_name.encode("utf-8", "replace")
            specific = b":" not in self._desc
            self._fast = fast_bar_regex(self._desc) if specific else FAST_ANY_BAR_RE
            # With the job's own pattern every fast-matched bar is the training bar.
            self._collapse_redraws = specific

    @property
    def fast_bar_re(self) -> re.Pattern[bytes]:
        return self._fast

    def _on_bar(
        self,
        desc: bytes | None,
        n: bytes,
        total: bytes | None,
        remaining: bytes | None,
        rate: bytes,
        postfix: bytes | None,
    ) -> Item | None:
        training = self._desc is not None and desc == self._desc
        if not training and not self._seen_own and _looks_like_training(postfix) and desc:
            # No bar of the expected name so far (the config's name differs from the job's,
            # or none was given): the bar that shows lr and loss is the training bar.
            self._set_job_name(desc.decode("utf-8", "replace"))
            training = True
        if training:
            self._seen_own = True
            pairs = parse_pairs(postfix) if postfix else {}
            loss = pairs.get("loss")
            if loss is None:
                loss = next((v for k, v in pairs.items() if "loss" in k), None)
            step = int(n)
            self.step = step
            row = (step, int_or_none(total), None, None, loss, pairs.get("lr"), self._rate(rate),
                   remaining, None)  # fmt: skip
            return self._row_result(row, self._loss_event(loss, step))
        if desc == b"Generating Samples" and total is not None:
            if n != total:
                self._sampling_done = False
            elif not self._sampling_done:
                self._sampling_done = True
                text = f"Generating Samples {n.decode()}/{total.decode()}"
                return ParseResult(
                    events=(LogEvent("sample_generated", step=self.step, text=text),)
                )
        return None

    def _on_message(self, record: Record) -> ParseResult | None:
        text = record.text
        if text.startswith("Saving at step"):
            match = _SAVING_RE.match(text)
            if match is not None:
                step = int(match[1])
                return ParseResult(events=(LogEvent("checkpoint_saved", step=step, text=text),))
        if text.startswith("#") and "Running job" in text:
            match = _JOB_RE.match(text)
            if match is not None and not self._seen_own:
                self._set_job_name(match[1])  # the config's name: what the bar shows
        if text == "Job stopped" or text.startswith("Error running job"):
            return ParseResult(events=(LogEvent("error", step=self.step, text=text),))
        return None

    def _opens_records(self) -> bool:
        return False

"""Trainer logs: following files as they grow, parsing progress, keeping metric series.

Headless and free of torch/Textual. The pieces, in the order bytes flow through them:

* :class:`LogFollower` (``follower``): one thread, inotify (watchfiles' RustNotify) on
  the jobs' folders, offset-based reads, truncation and rotation, a timer where inotify
  cannot help (network filesystems).
* :class:`LineSplitter` (``splitter``): ``\\r``/``\\n``/``\\r\\n`` breaks, ANSI escapes,
  invalid UTF-8, partial and over-long lines.
* :func:`make_parser` / :func:`parse_bytes` (``parsers``): presets for kohya-ss
  sd-scripts, ostris ai-toolkit, diffusers/accelerate examples and OneTrainer; generic
  ``key=value`` pairs, JSON lines and user regexes; auto-detection (``detect``).
* :class:`ProgressState`, :class:`MetricSeries` (``series``) and :class:`MetricsWriter`
  (``metricsfile``): the summary for the store, the bounded series for the UI, the
  per-job ``metrics.jsonl``.
* :class:`LogPipeline` (``pipeline``) wires splitter, parser and the three together for
  one job.

What each trainer prints, and what is taken from it, is in each preset's module
docstring (``kohya``, ``aitoolkit``, ``diffusers``, ``onetrainer``, ``generic``).
"""

from loradeck.core.monitor.detect import detect_preset
from loradeck.core.monitor.follower import LogFollower
from loradeck.core.monitor.metricsfile import MetricsWriter, read_metrics
from loradeck.core.monitor.parsers import (
    PRESETS,
    LogParser,
    canonical_parser_name,
    make_parser,
    parse_bytes,
    validate_user_regexes,
)
from loradeck.core.monitor.pipeline import LogPipeline
from loradeck.core.monitor.results import LogEvent, Metrics, ParseBatch, ParseResult
from loradeck.core.monitor.series import MetricSeries, ProgressState
from loradeck.core.monitor.splitter import LineSplitter, clean_line

__all__ = [
    "PRESETS",
    "LineSplitter",
    "LogEvent",
    "LogFollower",
    "LogParser",
    "LogPipeline",
    "MetricSeries",
    "Metrics",
    "MetricsWriter",
    "ParseBatch",
    "ParseResult",
    "ProgressState",
    "canonical_parser_name",
    "clean_line",
    "detect_preset",
    "make_parser",
    "parse_bytes",
    "read_metrics",
    "validate_user_regexes",
]

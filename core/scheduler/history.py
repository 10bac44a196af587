"""Past runtimes, for shortest-first ordering and backfill estimates.

A job without ``est_minutes`` is expected to take the median runtime of earlier jobs with
the same config file, else with the same *name stem*, else ``default_est_minutes``.

The name stem (:func:`name_stem`) drops what sweeps and numbering add to a name: the name
is cut before its first word (a run of letters and digits), after the first word, that
contains a digit; then trailing digits and separators go. So ``hero-v2``,
``hero-lr1e-4-r16`` and ``hero_3`` share the stem ``hero``; ``run12`` has stem ``run``;
``sd15-hero-3`` has stem ``sd15-hero``. A name that would be left empty is its own stem.
"""

from __future__ import annotations

import functools
import re
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from loradeck.core.models import Job, JobSpec

#: Leading separators, the first word, then every following word made of letters only.
_STEM = re.compile(r"[\W_]*[^\W_]+(?:[\W_]+[^\W\d_]+(?![^\W_]))*")
_TRAILING_DIGITS = re.compile(r"\d+$")
_SEPARATORS = "".join(chr(c) for c in range(128) if not chr(c).isalnum())
#: Only the latest runtimes of a key count, so that a job that got faster is seen as faster.
MAX_SAMPLES_PER_KEY = 50

_EMPTY: Mapping[str, tuple[float, ...]] = MappingProxyType({})
_EMPTY_MEDIANS: Mapping[str, float] = MappingProxyType({})


@functools.lru_cache(maxsize=1 << 16)
def name_stem(name: str) -> str:
    """The part of a job name that sweep variants and numbered copies share (see module)."""
    # sjf asks this of every waiting job without an estimate, every pass, and the regexes
    # take ~2 us a name: remembered (a pure function of the name, so nothing can go stale)
    found = _STEM.match(name)
    if found is None:
        return name
    stem = _TRAILING_DIGITS.sub("", found.group().rstrip(_SEPARATORS)).rstrip(_SEPARATORS)
    return stem or name


def history_keys(spec: JobSpec) -> tuple[str, ...]:
    """The keys a job's runtime is recorded under and estimated from, most specific first."""
    stem_key = "stem:" + name_stem(spec.name)
    if spec.config is not None:
        return ("config:" + str(spec.config), stem_key)
    return (stem_key,)


@dataclass(frozen=True)
class RuntimeHistory:
    """Recent runtimes (seconds) per key; an immutable value, :meth:`record` makes a new one."""

    samples: Mapping[str, tuple[float, ...]] = field(default_factory=lambda: _EMPTY)
    """Key -> the latest runtimes, oldest first."""
    medians: Mapping[str, float] = field(default_factory=lambda: _EMPTY_MEDIANS)
    """Key -> median of its samples (kept so that estimates cost one lookup)."""

    @classmethod
    def empty(cls) -> RuntimeHistory:
        return cls()

    def record(self, key: str, seconds: float) -> RuntimeHistory:
        """A history with one more runtime for ``key``."""
        if not seconds >= 0:
            raise ValueError(f"a runtime must be >= 0 seconds, got {seconds!r}")
        kept = (*self.samples.get(key, ()), float(seconds))[-MAX_SAMPLES_PER_KEY:]
        return RuntimeHistory(
            samples=MappingProxyType({**self.samples, key: kept}),
            medians=MappingProxyType({**self.medians, key: statistics.median(kept)}),
        )

    def record_job(self, spec: JobSpec, seconds: float) -> RuntimeHistory:
        """Record ``seconds`` under every key of ``spec`` (config and name stem)."""
        history = self
        for key in history_keys(spec):
            history = history.record(key, seconds)
        return history

    def median(self, key: str) -> float | None:
        return self.medians.get(key)

    def estimate(self, job: Job | JobSpec) -> float | None:
        """Median runtime of earlier jobs like this one (config first, then name stem),
        or None without history. ``est_minutes`` is not consulted here: see
        :func:`expected_seconds`."""
        if not self.medians:
            return None
        spec = job.spec if isinstance(job, Job) else job
        for key in history_keys(spec):
            found = self.medians.get(key)
            if found is not None:
                return found
        return None


def expected_seconds(spec: JobSpec, history: RuntimeHistory, default_s: float) -> float:
    """How long a job is expected to run: est_minutes, else history, else the default."""
    if spec.est_minutes is not None:
        return spec.est_minutes * 60.0
    found = history.estimate(spec)
    return default_s if found is None else found


def bound_seconds(spec: JobSpec, history: RuntimeHistory, default_s: float) -> float:
    """How long backfill assumes a job may hold its GPUs: its timeout, else its expected
    runtime (:func:`expected_seconds`)."""
    if spec.timeout is not None:
        return spec.timeout
    return expected_seconds(spec, history, default_s)

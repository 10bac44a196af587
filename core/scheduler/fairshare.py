"""Fair-share: decayed GPU-seconds per user and per project, and the factor they give.

Like Slurm's multifactor fair-share (the classic algorithm), past use decays with a
half-life, each user (and each project) is entitled to an equal share, and the factor is
``2 ** -(usage / share)``, where usage is the user's fraction of all decayed use and share
is ``1 / number of users``. loradeck averages the user's and the project's exponents:

    factor = 2 ** -((U_user / S_user + U_project / S_project) / 2)

It is 1.0 for someone with no recent use and falls towards 0 as they use more than their
share. The fair_share policy runs the jobs of the highest factor first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

DEFAULT_HALF_LIFE_S = 24 * 3600.0

_Entries = Mapping[str, tuple[float, float]]
_NONE: _Entries = MappingProxyType({})


def _decayed(entry: tuple[float, float], now: float, half_life_s: float) -> float:
    value, at = entry
    if now <= at:
        return value
    return value * math.exp2(-(now - at) / half_life_s)


def _add(entries: _Entries, name: str, amount: float, at: float, half_life_s: float) -> _Entries:
    old = entries.get(name)
    if old is None:
        entry = (amount, at)
    elif at >= old[1]:
        entry = (_decayed(old, at, half_life_s) + amount, at)
    else:
        # a charge dated before the last one: decay the charge, not the total
        entry = (old[0] + amount * math.exp2(-(old[1] - at) / half_life_s), old[1])
    return MappingProxyType({**entries, name: entry})


@dataclass(frozen=True)
class FairShareUsage:
    """Decayed GPU-seconds per user and per project; an immutable value."""

    half_life_s: float = DEFAULT_HALF_LIFE_S
    """Half-life of past use (``scheduler.fair_share_half_life_hours``); the latest
    :meth:`charge` sets it."""
    users: _Entries = field(default_factory=lambda: _NONE)
    """User -> (GPU-seconds, as of this time)."""
    projects: _Entries = field(default_factory=lambda: _NONE)
    """Project -> (GPU-seconds, as of this time)."""

    @classmethod
    def empty(cls, half_life_s: float = DEFAULT_HALF_LIFE_S) -> FairShareUsage:
        return cls(half_life_s=half_life_s)

    def charge(
        self, user: str, project: str, gpu_seconds: float, at: float, half_life_s: float
    ) -> FairShareUsage:
        """A usage with ``gpu_seconds`` more for ``user`` and ``project``, dated ``at``."""
        return self.charge_many(((user, project, gpu_seconds),), at, half_life_s)

    def charge_many(
        self, charges: Iterable[tuple[str, str, float]], at: float, half_life_s: float
    ) -> FairShareUsage:
        """:meth:`charge` for several (user, project, GPU-seconds) at once."""
        if not half_life_s > 0:
            raise ValueError(f"the fair-share half-life must be > 0 s, got {half_life_s!r}")
        users, projects = self.users, self.projects
        for user, project, amount in charges:
            if not amount >= 0:
                raise ValueError(f"cannot charge {amount!r} GPU-seconds to {user!r}")
            users = _add(users, user, amount, at, half_life_s)
            projects = _add(projects, project, amount, at, half_life_s)
        return FairShareUsage(half_life_s=half_life_s, users=users, projects=projects)

    def user_usage(self, user: str, now: float) -> float:
        """The user's GPU-seconds decayed to ``now``."""
        entry = self.users.get(user)
        return 0.0 if entry is None else _decayed(entry, now, self.half_life_s)

    def project_usage(self, project: str, now: float) -> float:
        """The project's GPU-seconds decayed to ``now``."""
        entry = self.projects.get(project)
        return 0.0 if entry is None else _decayed(entry, now, self.half_life_s)

    def factor(self, user: str, project: str, now: float) -> float:
        """The fair-share factor in (0, 1]: higher means less recent use than its share."""
        return self.factors(((user, project),), now)[(user, project)]

    def factors(self, pairs: Iterable[tuple[str, str]], now: float) -> dict[tuple[str, str], float]:
        """:meth:`factor` for many (user, project) pairs, summing the totals once."""
        user_exp = _exponents(self.users, now, self.half_life_s)
        project_exp = _exponents(self.projects, now, self.half_life_s)
        return {
            (user, project): math.exp2(
                -(user_exp.get(user, 0.0) + project_exp.get(project, 0.0)) / 2.0
            )
            for user, project in pairs
        }


def _exponents(entries: _Entries, now: float, half_life_s: float) -> dict[str, float]:
    """Name -> usage / share, with usage a fraction of the total and share 1/len."""
    decayed = {name: _decayed(entry, now, half_life_s) for name, entry in entries.items()}
    total = math.fsum(decayed.values())
    if total <= 0:
        return {}
    count = len(decayed)
    return {name: count * value / total for name, value in decayed.items()}

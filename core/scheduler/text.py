"""How the scheduler writes times for people (pure: no clock, no time zone)."""

from __future__ import annotations


def fmt_span(seconds: float) -> str:
    """A short relative span: ``42 s``, ``12 min``, ``3.5 h``, ``2.1 d``."""
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def fmt_duration(seconds: float) -> str:
    """A duration for reports: ``45s``, ``12m05s``, ``3h07m``, ``52h40m``."""
    whole = round(max(seconds, 0.0))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"

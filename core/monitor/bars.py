"""tqdm progress bars, as bytes.

tqdm draws ``{desc}: {pct:3.0f}%|{bar}| {n}/{total} [{elapsed}<{remaining}, {rate}{postfix}]``
(no ``desc: `` when the description is empty; ``{n}{unit} [{elapsed}, {rate}{postfix}]``
when the total is unknown). The rate is ``1.49it/s`` or, below one per second,
``4.51s/it``; ``set_postfix(a=1)`` appends ``, a=1`` and ``set_postfix_str(s)``
appends ``, s`` (ai-toolkit writes ``lr: 1.0e-04 loss: 6.468e-01`` that way).

Every bar pattern captures the same six groups, in order: description (or ``None``), n,
total (or ``None``), remaining (or ``None``), rate with its unit, postfix (or ``None``).
:func:`fast_bar_regex` builds the pattern the bulk path splits whole blocks with: it
starts with the line break before the bar and ends with a look-ahead for the one after,
so the parts between two matches are exactly the other lines. The line-by-line path
matches :data:`BAR_OPEN_RE` against ``b"\\n" + line``: the same pattern without the
look-ahead, so that text glued after the closing ``]`` (diffusers logs right after a
bar) is found too.
"""

from __future__ import annotations

import re

_NO_CTRL = rb"\x00-\x1f\x7f"
_DESC = rb"([^" + _NO_CTRL + rb"|:]*)"
_BODY = (
    rb"[ ]*[0-9]{1,3}%\|[^" + _NO_CTRL + rb"|]*\|[ ]*([0-9]+)/([0-9]+)"
    rb"[ ]\[[0-9:]+<([0-9:?]+),[ ]*((?:[0-9.]+[kMG]?|\?)(?:[A-Za-z]+/s|s/[A-Za-z]+))"
    rb"(?:,[ ]*([^" + _NO_CTRL + rb"\]]*))?\][ ]*"
)
_BREAK = rb"(?:\r\n?|\n)"
_END = rb"(?=[\r\n]|\Z)"

#: A bar with a total, anywhere a line starts; the slow path's first try.
BAR_OPEN_RE = re.compile(_BREAK + rb"(?:" + _DESC + rb": )?" + _BODY)
#: A bar whose description holds ``:`` (``Epoch 1: train``); tried after BAR_OPEN_RE.
BAR_LOOSE_RE = re.compile(rb"\n(?:([^\x00-\x1f\x7f|]*?): )?" + _BODY)
#: A bar without a total: ``steps: 45it [00:10, 4.50it/s, loss=0.1]``.
BAR_NO_TOTAL_RE = re.compile(
    rb"\n(?:([^\x00-\x1f\x7f|]*?): )?[ ]*([0-9]+)(?:[A-Za-z]+)? \[[0-9:]+(?:<[0-9:?]+)?,[ ]*()()"
    rb"((?:[0-9.]+[kMG]?|\?)(?:[A-Za-z]+/s|s/[A-Za-z]+))"
    rb"(?:,[ ]*([^\x00-\x1f\x7f\]]*))?\][ ]*"
)


def fast_bar_regex(desc: bytes | None = None) -> re.Pattern[bytes]:
    """The block-splitting pattern; with ``desc``, only bars with that description."""
    head = rb"(?:" + _DESC + rb": )?" if desc is None else rb"(" + re.escape(desc) + rb"): "
    return re.compile(_BREAK + head + _BODY + _END)


#: Any bar with a total, for parsers with no preferred description.
FAST_ANY_BAR_RE = fast_bar_regex()

_SCALE = {b"": 1.0, b"k": 1e3, b"M": 1e6, b"G": 1e9}
_RATE_RE = re.compile(rb"([0-9.]+)(?:([kMG]?)[A-Za-z]*/s|s/[A-Za-z]+)\Z")


def rate_per_second(rate: bytes) -> float | None:
    """Iterations per second from ``1.49it/s``, ``4.51s/it``, ``1.2kit/s``; ``?it/s`` -> None."""
    match = _RATE_RE.match(rate)
    if match is None:
        return None
    try:
        value = float(match[1])
    except ValueError:
        return None
    if match[2] is None:  # "s/it": seconds per iteration
        return 1.0 / value if value > 0 else None
    return value * _SCALE[match[2]]


_PAIR_RE = re.compile(
    rb"([A-Za-z_][A-Za-z0-9_ ./-]*?)[ ]*[=:][ ]*"
    rb"([-+]?(?:[0-9]+\.?[0-9]*(?:[eE][-+]?[0-9]+)?|\.[0-9]+(?:[eE][-+]?[0-9]+)?"
    rb"|nan|NaN|inf|Inf|-inf))(?=[,\s]|\Z)"
)


def parse_pairs(text: bytes) -> dict[str, float]:
    """``key=value`` and ``key: value`` pairs with numeric values, keys lower-cased.

    Reads tqdm postfixes (``avr_loss=0.0812``, ``loss=0.1, smooth loss=0.2``) and
    ai-toolkit's ``lr: 1.0e-04 loss: 6.468e-01``.
    """
    pairs: dict[str, float] = {}
    for key, value in _PAIR_RE.findall(text):
        try:
            pairs[key.strip().lower().decode("ascii", "replace")] = float(value)
        except ValueError:
            continue
    return pairs


def first_of(pairs: dict[str, float], keys: tuple[str, ...]) -> float | None:
    """The value of the first of ``keys`` present."""
    for key in keys:
        if key in pairs:
            return pairs[key]
    return None

"""The ``--gpus`` value: which GPUs loradeck may use, and the topology of simulated ones.

:func:`parse_gpu_spec` reads ``auto`` (every GPU NVML sees), a list such as ``0,2,3`` (only
those NVML indices), or ``sim:N`` / ``sim:NxG`` (N simulated GPUs of G GiB) for machines
without GPUs, tests, the demo and what-if planning. It is plain text parsing, apart from the
NVML reader (:mod:`loradeck.core.gpu`), so that checking a value needs no inventory.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from loradeck.core.errors import GpuError

DEFAULT_SIM_MEMORY_GB = 24.0
MAX_SIM_GPUS = 64
MAX_SIM_MEMORY_GB = 4096.0
#: Topology level NVML reports for two GPUs whose only common ancestor is the system;
#: also used when NVML cannot tell, so unknown pairs are never preferred.
TOPOLOGY_SYSTEM = 50

_SIM_RE = re.compile(r"sim:([0-9]{1,4})(?:x([0-9]{1,6}(?:\.[0-9]{1,3})?))?")
_SPEC_HELP = "expected auto, a list like 0,2,3, or sim:N / sim:NxG (e.g. sim:4x24)"
#: How to get GPUs on a machine without them; the inventory repeats it when NVML finds none.
SIM_HINT = "to simulate GPUs use --gpus sim:4 (or sim:4x24 for 24 GiB each)"


@dataclass(frozen=True)
class GpuSpec:
    """A parsed ``--gpus`` value; ``str()`` gives it back in canonical form."""

    kind: Literal["auto", "list", "sim"]
    indices: tuple[int, ...] = ()
    """The NVML indices of a list spec."""
    sim_count: int = 0
    sim_memory_gb: float = DEFAULT_SIM_MEMORY_GB
    source: str = field(default="--gpus", compare=False)
    """Where the value came from, for error messages (``--gpus``, ``resources.gpus``)."""

    @property
    def simulated(self) -> bool:
        return self.kind == "sim"

    def __str__(self) -> str:
        if self.kind == "list":
            return ",".join(str(i) for i in self.indices)
        if self.kind == "sim":
            return f"sim:{self.sim_count}x{self.sim_memory_gb:g}"
        return "auto"


def parse_gpu_spec(text: str, *, source: str = "--gpus") -> GpuSpec:
    """Parse ``auto``, ``0,2,3``, ``sim:N`` or ``sim:NxG``; anything else raises GpuError."""
    value = text.strip().lower()
    if value == "auto":
        return GpuSpec("auto", source=source)
    if value.startswith("sim"):
        match = _SIM_RE.fullmatch(value)
        if match is None:
            raise GpuError(f"{source} {text!r}: {_SPEC_HELP}")
        count = int(match[1])
        memory = float(match[2]) if match[2] else DEFAULT_SIM_MEMORY_GB
        if not 1 <= count <= MAX_SIM_GPUS:
            raise GpuError(f"{source} {text!r}: sim:N needs N from 1 to {MAX_SIM_GPUS}")
        if not 0 < memory <= MAX_SIM_MEMORY_GB:
            raise GpuError(
                f"{source} {text!r}: sim:NxG needs G (GiB per GPU) above 0 "
                f"and at most {MAX_SIM_MEMORY_GB:g}"
            )
        return GpuSpec("sim", sim_count=count, sim_memory_gb=memory, source=source)
    parts = [part.strip() for part in value.split(",")]
    # isascii() first: str.isdigit() also accepts digits such as '²' that int() refuses
    if not all(part.isascii() and part.isdigit() and len(part) <= 4 for part in parts):
        raise GpuError(f"{source} {text!r}: {_SPEC_HELP}")
    indices = tuple(int(part) for part in parts)
    for index in indices:
        if indices.count(index) > 1:
            raise GpuError(f"{source} {text!r}: GPU {index} is listed twice; list each once")
    return GpuSpec("list", indices=indices, source=source)


def sim_distances(indices: Sequence[int]) -> dict[tuple[int, int], int]:
    """A plausible two-socket PCIe box: pairs (0-1, 2-3, ...) share a switch, groups of four
    share a host bridge, the rest are across sockets."""
    out: dict[tuple[int, int], int] = {}
    for a in indices:
        for b in indices:
            if a != b:
                out[a, b] = 10 if a // 2 == b // 2 else 30 if a // 4 == b // 4 else TOPOLOGY_SYSTEM
    return out

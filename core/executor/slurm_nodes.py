"""The cluster's nodes and GPUs as ``sinfo`` shows them, for the GPU screen in Slurm mode.

GPUs are generic resources (gres) to Slurm; without slurmdbd they are not a TRES, so what
is in use comes from ``sinfo -O GresUsed`` (``gpu:2(IDX:0-1)``), not from ``AllocTRES``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from loradeck.core.executor.slurm_commands import SlurmCommands

#: ``sinfo -N -O`` fields, each followed by ``|`` (no padding).
SINFO_FIELDS = (
    "NodeHost",
    "StateLong",
    "Partition",
    "CPUsState",
    "Memory",
    "AllocMem",
    "Gres",
    "GresUsed",
    "Reason",
)
SINFO_FORMAT = ",".join(f"{name}:|" for name in SINFO_FIELDS)
_COUNT_RE = re.compile(r"^([0-9]+)")


@dataclass(frozen=True)
class SlurmNode:
    """One node of the cluster (in one partition)."""

    name: str
    state: str
    """``idle``, ``mixed``, ``allocated``, ``drained``, ``down``... (sinfo's words)."""
    partition: str
    cpus_used: int
    cpus_total: int
    mem_total_mb: int
    mem_used_mb: int
    gpus_total: int
    gpus_used: int
    gres: str
    """As configured (``gpu:a100:4``)."""
    reason: str = ""
    """Why it is drained or down, when it is."""

    @property
    def default_partition(self) -> bool:
        return self.partition.endswith("*")


def split_gres(text: str) -> Iterator[str]:
    """``gpu:a100:2(IDX:0,3),shard:4`` -> ``gpu:a100:2(IDX:0,3)``, ``shard:4`` (commas
    inside parentheses do not split)."""
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        elif char == "," and depth == 0:
            if text[start:index].strip():
                yield text[start:index].strip()
            start = index + 1
    if text[start:].strip():
        yield text[start:].strip()


def gpu_count(gres: str) -> int:
    """GPUs in a gres string: ``gpu:4`` -> 4, ``gpu:a100:2(IDX:0-1),gpu:v100:1`` -> 3,
    ``gres:gpu:2`` (a job's TresPerNode) -> 2, ``(null)`` -> 0."""
    total = 0
    for item in split_gres(gres):
        parts = item.split("(", 1)[0].split(":")
        if parts and parts[0] == "gres":
            parts = parts[1:]
        if not parts or parts[0] != "gpu":
            continue
        if len(parts) == 1:
            total += 1
            continue
        found = _COUNT_RE.match(parts[-1])
        total += int(found.group(1)) if found else 1
    return total


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return 0


def parse_sinfo(text: str) -> tuple[SlurmNode, ...]:
    """Rows of ``sinfo -N -h -O SINFO_FORMAT``; malformed lines are skipped."""
    nodes = []
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) < len(SINFO_FIELDS) or not parts[0].strip():
            continue
        name, state, partition, cpus, mem, alloc_mem, gres, used, reason = parts[:9]
        # CPUsState is allocated/idle/other/total.
        cpu_parts = cpus.split("/")
        cpu_used = _int(cpu_parts[0]) if len(cpu_parts) == 4 else 0
        cpu_total = _int(cpu_parts[3]) if len(cpu_parts) == 4 else 0
        nodes.append(
            SlurmNode(
                name=name.strip(),
                state=state.strip(),
                partition=partition.strip(),
                cpus_used=cpu_used,
                cpus_total=cpu_total,
                mem_total_mb=_int(mem),
                mem_used_mb=_int(alloc_mem),
                gpus_total=gpu_count(gres.strip()),
                gpus_used=gpu_count(used.strip()),
                gres="" if gres.strip() == "(null)" else gres.strip(),
                reason="" if reason.strip() in ("none", "(null)") else reason.strip(),
            )
        )
    return tuple(nodes)


def read_nodes(commands: SlurmCommands, *, partition: str | None = None) -> tuple[SlurmNode, ...]:
    """The nodes (of ``partition``, or all), one ``sinfo`` call."""
    args = ["-N", "-h", "-O", SINFO_FORMAT]
    if partition:
        args += ["-p", partition]
    return parse_sinfo(commands.run("sinfo", *args))

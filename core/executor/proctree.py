"""Find and kill every process of a job attempt, including those that left its group.

A job's processes are found three ways, so that none is missed:

* the descendants of its root process (``run.sh``);
* the members of the root's process group (children whose parent died stay in it);
* every process whose environment carries the attempt's ``LORADECK_RUN_TOKEN``: it is
  inherited by everything the attempt starts, including processes that called ``setsid``
  or were re-parented to init. Only a process that cleared its environment escapes this.

Processes are held as :class:`psutil.Process`, which checks the creation time before
signalling, so a recycled pid is never killed by mistake.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import psutil

TOKEN_VAR = "LORADECK_RUN_TOKEN"  # noqa: S105 - a variable name, not a secret
JOB_ID_VAR = "LORADECK_JOB_ID"

_POLL_S = 0.05
#: How long the SIGKILL stage waits for the kernel to tear processes down.
SETTLE_S = 5.0


@dataclass(frozen=True)
class JobTag:
    """Which job attempt a process belongs to, read from its environment."""

    job_id: int
    token: str


def job_tag(pid: int) -> JobTag | None:
    """The job attempt that process ``pid`` belongs to, or None (not a job's, or gone).

    Cheap enough to call for every process NVML reports on a GPU.
    """
    try:
        env = psutil.Process(pid).environ()
    except (psutil.Error, OSError):
        return None
    token, job_id = env.get(TOKEN_VAR), env.get(JOB_ID_VAR, "")
    if not token or not job_id.isdigit():
        return None
    return JobTag(int(job_id), token)


def verified_root(pid: int | None, token: str | None) -> psutil.Process | None:
    """Process ``pid`` if it is alive and (when ``token`` is given) carries ``token``."""
    if pid is None or pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        if not _alive(proc):
            return None
        if token is not None and proc.environ().get(TOKEN_VAR) != token:
            return None  # the pid was recycled by someone else's process
    except (psutil.Error, OSError):
        return None
    return proc


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), or None if
    it is gone, a zombie, or there is no ``/proc``. Two reads that agree mean the same
    living process: a pid reused by another process has a later start. One file read,
    where psutil would need four: for checking, again and again, a root already verified
    by :func:`verified_root`."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
        # "pid (comm) state ppid ... starttime(22nd field) ...": comm may hold spaces.
        fields = stat[stat.rindex(b")") + 2 :].split(b" ", 20)
        if fields[0] in (b"Z", b"X", b"x"):
            return None
        return int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def find_tree(pid: int | None, *, token: str | None = None) -> list[psutil.Process]:
    """The live processes of an attempt: root ``pid``, its descendants and group, and
    every process carrying ``token``. Never this process or its ancestors."""
    root = verified_root(pid, token)
    pgid = _group_of(root)
    needle = f"{TOKEN_VAR}={token}\0".encode() if token is not None else None
    wanted: set[int] = {root.pid} if root is not None else set()
    children: dict[int, list[int]] = {}
    for entry in _process_table(needle):
        children.setdefault(entry.ppid, []).append(entry.pid)
        if (pgid is not None and entry.pgid == pgid) or entry.has_token:
            wanted.add(entry.pid)
    stack = list(wanted)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in wanted:
                wanted.add(child)
                stack.append(child)
    wanted -= _self_and_ancestors()
    found = []
    for pid_ in sorted(wanted):
        try:
            proc = root if root is not None and pid_ == root.pid else psutil.Process(pid_)
        except psutil.Error:
            continue
        if _alive(proc):
            found.append(proc)
    return found


@dataclass(frozen=True)
class _Entry:
    pid: int
    ppid: int
    pgid: int
    has_token: bool


def _process_table(needle: bytes | None) -> Iterator[_Entry]:
    """Every process's parent, group and whether its environment holds ``needle``.

    Reads /proc directly where it exists: psutil's per-process objects cost ten times as
    much, and the engine asks for every running job's processes on each pass.
    """
    if not os.path.isdir("/proc/self"):
        yield from _process_table_psutil(needle)
        return
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            fields = stat[stat.rindex(b")") + 2 :].split(b" ", 3)
            has_token = False
            if needle is not None:
                with open(f"/proc/{name}/environ", "rb") as handle:
                    has_token = needle in b"\0" + handle.read()
        except (OSError, ValueError):
            continue  # gone, or not ours to read
        yield _Entry(int(name), int(fields[1]), int(fields[2]), has_token)


def _process_table_psutil(needle: bytes | None) -> Iterator[_Entry]:
    token = needle.decode()[len(TOKEN_VAR) + 1 : -1] if needle is not None else None
    for proc in psutil.process_iter():
        try:
            has_token = token is not None and proc.environ().get(TOKEN_VAR) == token
            yield _Entry(proc.pid, proc.ppid(), os.getpgid(proc.pid), has_token)
        except (psutil.Error, OSError):
            continue


def kill_tree(
    pid: int | None,
    *,
    grace: float,
    token: str | None = None,
    spare_root: bool = False,
    settle: float = SETTLE_S,
) -> list[int]:
    """Stop every process of an attempt; the pids that survived (empty on success).

    SIGINT to the process group (and to each process outside it), then SIGTERM, then
    SIGKILL, ``grace`` seconds apart; a stage ends early once everything is gone. With
    ``spare_root`` the root is spared SIGKILL until the rest is gone, so that a runner
    that traps SIGINT and SIGTERM can still record how its command ended; it gets
    SIGKILL only if it does not exit by itself. Blocks for at most about
    ``2 * grace + settle`` seconds.
    """
    root = verified_root(pid, token)
    root_pid = root.pid if root is not None else None
    for sig in (signal.SIGINT, signal.SIGTERM):
        procs = find_tree(root_pid, token=token)
        if not procs:
            return []
        # The group is signalled only while its leader lives: a group id is free for
        # reuse once its last member is gone.
        _signal(procs, sig, _group_of(verified_root(root_pid, token)))
        _wait_gone(procs, time.monotonic() + grace)
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        procs = find_tree(root_pid, token=token)
        others = [p for p in procs if p.pid != root_pid or not spare_root]
        if not procs:
            return []
        if not others:
            # Only the runner is left: give it a moment to record the status and exit.
            if _wait_gone(procs, min(deadline, time.monotonic() + 1.0)):
                return []
            others = procs
        _signal(others, signal.SIGKILL, None)
        _wait_gone(others, deadline)
    return [p.pid for p in find_tree(root_pid, token=token)]


def _signal(procs: Iterable[psutil.Process], sig: int, pgid: int | None) -> None:
    if pgid is not None:
        try:
            os.killpg(pgid, sig)
        except OSError:
            pgid = None
    for proc in procs:
        try:
            if pgid is None or os.getpgid(proc.pid) != pgid:
                proc.send_signal(sig)
        except (psutil.Error, OSError):
            continue


def _wait_gone(procs: list[psutil.Process], deadline: float) -> bool:
    while True:
        if not any(_alive(p) for p in procs):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, OSError):
        return False


def _group_of(root: psutil.Process | None) -> int | None:
    """The root's process group, if the root leads its own (never our own group)."""
    if root is None:
        return None
    try:
        pgid = os.getpgid(root.pid)
    except OSError:
        return None
    return pgid if pgid == root.pid and pgid != os.getpgrp() else None


def _self_and_ancestors() -> set[int]:
    pids = {os.getpid()}
    with contextlib.suppress(psutil.Error):
        pids.update(p.pid for p in psutil.Process().parents())
    return pids

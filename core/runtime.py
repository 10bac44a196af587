"""Assembling a ready engine from settings and command-line overrides."""

from __future__ import annotations

from loradeck.core.engine import Engine
from loradeck.core.events import EventBus
from loradeck.core.executor import Executor, TmuxExecutor
from loradeck.core.gpu import GpuInventory
from loradeck.core.home import Home
from loradeck.core.settings import Settings


def build_engine(
    home: Home,
    settings: Settings,
    *,
    gpus: str | None = None,
    tmux_session: str | None = None,
    tmux_socket: str | None = None,
    bus: EventBus | None = None,
) -> Engine:
    """An engine (not started) for ``home``: the executor of ``executor.kind`` (tmux
    windows, or Slurm), the GPU inventory, settings.

    With Slurm, raises :class:`~loradeck.core.errors.ExecutorError` (with Slurm's own
    message) when its commands are missing or slurmctld does not answer."""
    max_log_bytes = int(settings.monitoring.max_log_mb * 2**20)
    executor: Executor
    if settings.executor.kind == "slurm":
        from loradeck.core.executor.slurm import SlurmExecutor

        slurm = SlurmExecutor(settings.slurm, home=home, max_log_bytes=max_log_bytes)
        slurm.check()
        executor = slurm
    else:
        executor = TmuxExecutor(
            session=tmux_session or settings.executor.tmux_session,
            socket_name=tmux_socket or settings.executor.tmux_socket,
            max_log_bytes=max_log_bytes,
            close_on_success=settings.executor.close_on_success,
        )
    inventory = GpuInventory(gpus or settings.resources.gpus)
    return Engine(home, settings, executor=executor, inventory=inventory, bus=bus)

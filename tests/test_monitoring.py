"""Progress monitoring end to end: the demo's real trainer in real tmux windows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, wait_for, write
from engine_helpers import FAST, Harness

from loradeck.core.events import CheckpointSaved, JobProgress, JobWarning
from loradeck.core.models import FailureClass, JobState
from loradeck.core.monitor import read_metrics
from loradeck.core.settings import MonitoringSettings

pytestmark = pytest.mark.slow

TRAINER = REPO / "configs" / "demo" / "toy_lora.py"
PROMPTS = REPO / "configs" / "demo" / "prompts.txt"


def toy_job(tmp_path: Path, name: str, **extra: object) -> str:
    """A batch with one toy trainer job; ``extra`` goes into its config."""
    values = {
        "network_dim": 4,
        "network_alpha": 4,
        "learning_rate": 1e-2,
        "train_batch_size": 8,
        "max_train_epochs": 2,
        "dataset_size": 64,
        "seed": 1,
        "output_name": "toy",
        "save_every_n_epochs": 1,
        "sample_every_n_epochs": 1,
        "sample_prompts": str(PROMPTS),
        **extra,
    }
    config = write(
        tmp_path / f"{name}.toml",
        "# toy config\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()),
    )
    return (
        f'[[job]]\nname = "{name}"\n'
        f'command = "\\"$LORADECK_PYTHON\\" {TRAINER} --config_file {{config}}"\n'
        f'config = "{config}"\ngpus = 1\nvram_gb = 4\n'
    )


def make_harness(tmp_path: Path, socket: str, **monitoring: object) -> Iterator[Harness]:
    settings = FAST.model_copy(update={"monitoring": MonitoringSettings(**monitoring)})  # type: ignore[arg-type]
    h = Harness(tmp_path / "home", socket, settings)
    h.engine.start()
    yield h
    h.engine.stop()
    h.store.close()


@pytest.fixture
def watched(tmp_path: Path, tmux_socket: str) -> Iterator[Harness]:
    yield from make_harness(tmp_path, tmux_socket)


def test_trainer_progress_reaches_the_store_while_it_runs(watched: Harness, tmp_path: Path) -> None:
    # ~8 s of steps, so that several progress saves (every 2 s) land while it runs
    (job,) = watched.submit(toy_job(tmp_path, "toy", sleep_per_step=0.5), tmp_path)

    def running_with_progress() -> bool:
        current = watched.job(job.id)
        return current.state == JobState.RUNNING and bool(
            current.progress and current.progress.step
        )

    wait_for(running_with_progress, 60, "progress in the store while the job runs")
    live = watched.job(job.id)
    assert live.progress is not None and live.progress.total_steps == 16
    assert live.progress.loss is not None and live.log_offset > 0
    done = watched.wait_state(job.id, JobState.COMPLETED, timeout=120)
    assert done.progress is not None
    assert done.progress.step == 16 and done.progress.epoch == 2
    assert done.progress.val_loss is not None
    rows = read_metrics(done.job_dir / "metrics.jsonl")
    assert rows and rows[-1]["step"] == 16
    assert [r["step"] for r in rows] == sorted(r["step"] for r in rows)
    progress = [e for e in watched.events if isinstance(e, JobProgress) and e.job_id == job.id]
    assert progress and progress[-1].total_steps == 16
    saved = [e.path for e in watched.events if isinstance(e, CheckpointSaved)]
    assert any(path.endswith("toy-000001.safetensors") for path in saved)


def test_nan_loss_stops_the_job_as_diverged(watched: Harness, tmp_path: Path) -> None:
    (job,) = watched.submit(
        toy_job(tmp_path, "nan", nan_at_step=3, sleep_per_step=0.2, max_train_epochs=20),
        tmp_path,
    )
    ended = watched.wait_state(job.id, JobState.FAILED, timeout=90)
    assert ended.failure_class == FailureClass.DIVERGED
    assert ended.reason.startswith("diverged at step ")
    assert int(ended.reason.rsplit(" ", 1)[1]) >= 3
    # stopped early, not run to its end
    assert ended.progress is not None and (ended.progress.step or 0) < 100


@pytest.fixture
def watchdog(tmp_path: Path, tmux_socket: str) -> Iterator[Harness]:
    # The stall clock runs from the start, and the trainer's `import torch` alone can take
    # 10-20 s on a loaded machine: the window must be longer than that, or the job is
    # killed as stalled before its first step.
    yield from make_harness(tmp_path, tmux_socket, stall_minutes=0.5, stall_action="kill")


def test_stalled_job_is_killed_by_the_watchdog(watchdog: Harness, tmp_path: Path) -> None:
    (job,) = watchdog.submit(
        toy_job(tmp_path, "hang", hang_at_step=4, sleep_per_step=0.05), tmp_path
    )
    ended = watchdog.wait_state(job.id, JobState.FAILED, timeout=180)
    assert ended.failure_class == FailureClass.STALLED
    warnings = [e for e in watchdog.events if isinstance(e, JobWarning) and e.job_id == job.id]
    assert warnings and "no progress" in warnings[0].message
    # the trainer stops printing around step 4 and never ends by itself
    assert ended.progress is not None and ended.progress.step in (3, 4)

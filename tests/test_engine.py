"""The engine with real tmux (private socket), real processes and a real store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from conftest import Cli, wait_for, write
from engine_helpers import FAST, Harness

from loradeck.core.actions import cancel_job
from loradeck.core.errors import EngineLockedError
from loradeck.core.models import FailureClass, JobState
from loradeck.core.runtime import build_engine
from loradeck.core.settings import HookSettings

pytestmark = pytest.mark.slow


def test_jobs_run_and_exit_codes_map_to_states(harness: Harness, tmp_path: Path) -> None:
    ok, bad = harness.submit(
        """
        [[job]]
        name = "ok"
        command = "echo hello from $LORADECK_JOB_NAME on $CUDA_VISIBLE_DEVICES"
        [[job]]
        name = "bad"
        command = "echo failing; exit 3"
        gpus = 0
        """,
        tmp_path,
    )
    done = harness.wait_state(ok.id, JobState.COMPLETED)
    failed = harness.wait_state(bad.id, JobState.FAILED)
    assert done.exit_code == 0 and done.attempts == 1
    assert len(done.gpu_ids) == 1
    assert f"hello from ok on {done.gpu_ids[0]}" in done.log_file.read_text()
    assert failed.exit_code == 3 and failed.failure_class == FailureClass.EXIT_CODE
    assert failed.reason == "exit code 3"
    kinds = [e.kind for e in harness.events]
    assert "job_started" in kinds and "job_completed" in kinds and "job_failed" in kinds
    logged = [
        json.loads(line)["kind"] for line in harness.home.events_file.read_text().splitlines()
    ]
    assert "job_completed" in logged


def test_cancel_kills_the_whole_tree(harness: Harness, tmp_path: Path) -> None:
    (job,) = harness.submit(
        """
        [[job]]
        name = "tree"
        command = "sleep 300 & sleep 300 & setsid sleep 300 & echo started; wait"
        """,
        tmp_path,
    )
    harness.wait_state(job.id, JobState.RUNNING)
    log_file = harness.job(job.id).log_file
    wait_for(lambda: log_file.exists() and "started" in log_file.read_text(), 15, "job output")
    pids = harness.engine.executor.pids(harness.job(job.id))
    assert len(pids) >= 3
    harness.store.update(job.id, lambda j: cancel_job(j, time.time()))
    cancelled = harness.wait_state(job.id, JobState.CANCELLED, timeout=30)
    assert cancelled.failure_class == FailureClass.CANCELLED
    alive = [
        p
        for p in pids
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []


def test_timeout_gives_timeout(harness: Harness, tmp_path: Path) -> None:
    (job,) = harness.submit(
        '[[job]]\nname = "slow"\ncommand = "sleep 300"\ntimeout = 1\ngpus = 0\n', tmp_path
    )
    ended = harness.wait_state(job.id, JobState.TIMEOUT, timeout=30)
    assert ended.failure_class == FailureClass.TIMEOUT


def test_retry_with_backoff_then_success(harness: Harness, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    (job,) = harness.submit(
        f"""
        [[job]]
        name = "flaky"
        gpus = 0
        retries = 2
        retry_backoff = 1
        command = "echo run >> {counter}; [ $(wc -l < {counter}) -ge 2 ]"
        """,
        tmp_path,
    )
    done = harness.wait_state(job.id, JobState.COMPLETED, timeout=40)
    assert done.attempts == 2
    assert counter.read_text().count("run") == 2
    retrying = [e for e in harness.events if e.kind == "job_retrying"]
    assert len(retrying) == 1


def test_oom_is_classified_and_batch_size_halved(harness: Harness, tmp_path: Path) -> None:
    config = write(
        tmp_path / "train.toml",
        "# my settings\ntrain_batch_size = 8\ngradient_accumulation_steps = 1\n",
    )
    script = write(
        tmp_path / "oom.sh",
        'if grep -q "train_batch_size = 8" "$1"; then\n'
        '  echo "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" >&2; exit 1\n'
        "fi\necho trained\n",
    )
    (job,) = harness.submit(
        f"""
        [[job]]
        name = "oomy"
        command = "bash {script} {{config}}"
        config = "{config}"
        retries = 1
        retry_backoff = 1
        on_oom = "smaller_batch"
        """,
        tmp_path,
    )
    done = harness.wait_state(job.id, JobState.COMPLETED, timeout=40)
    assert done.attempts == 2
    text = done.config_copy.read_text() if done.config_copy else ""
    assert "train_batch_size = 4" in text and "gradient_accumulation_steps = 2" in text
    assert "# my settings" in text
    retry = [e for e in harness.events if e.kind == "job_retrying"]
    assert retry and "CUDA out of memory" in retry[0].reason  # type: ignore[attr-defined]
    assert config.read_text().count("train_batch_size = 8") == 1


def test_afterok_dependent_of_failed_job_is_cancelled(harness: Harness, tmp_path: Path) -> None:
    first, second = harness.submit(
        """
        [[job]]
        name = "breaks"
        command = "exit 1"
        gpus = 0
        [[job]]
        name = "after"
        command = "echo never"
        gpus = 0
        depends_on = ["breaks"]
        """,
        tmp_path,
    )
    harness.wait_state(first.id, JobState.FAILED)
    after = harness.wait_state(second.id, JobState.CANCELLED)
    assert after.reason == f"dependency {first.id} failed"
    assert after.failure_class == FailureClass.DEPENDENCY


def test_second_engine_refuses_and_names_the_holder(harness: Harness, tmux_socket: str) -> None:
    other = build_engine(
        harness.home, FAST, gpus="sim:4", tmux_session="ld", tmux_socket=tmux_socket
    )
    with pytest.raises(EngineLockedError) as err:
        other.start()
    assert f"pid {os.getpid()}" in str(err.value)


def test_engine_picks_up_cli_submits(harness: Harness, tmp_path: Path) -> None:
    cli = Cli(harness.home.root, tmp_path)
    out = cli("submit", "--gpus", "0", "--name", "from-cli", "--", "echo hi")
    assert out.returncode == 0, out.stderr
    job_id = int(out.stdout.split("submitted job ")[1].split(":")[0])
    harness.wait_state(job_id, JobState.COMPLETED, timeout=15)


def test_hooks_get_event_fields(tmp_path: Path, tmux_socket: str) -> None:
    marker = tmp_path / "hook.out"
    settings = FAST.model_copy(
        update={
            "hooks": HookSettings(
                on_job_failed=f'echo "$LORADECK_JOB_ID $LORADECK_JOB_NAME $LORADECK_REASON" > {marker}; exit 4'
            )
        }
    )
    h = Harness(tmp_path / "home", tmux_socket, settings)
    h.engine.start()
    try:
        (job,) = h.submit(
            '[[job]]\nname = "x; $(touch pwned)"\ncommand = "exit 2"\ngpus = 0\n', tmp_path
        )
        wait_for(marker.exists, 20, "the hook's output")
        wait_for(lambda: marker.read_text().strip(), 5, "the hook to finish")
        assert marker.read_text().strip() == f"{job.id} x; $(touch pwned) exit code 2"
        assert not (tmp_path / "pwned").exists()
        wait_for(
            lambda: any(e.kind == "engine_message" and "exited 4" in e.message for e in h.events),
            10,
            "hook failure report",
        )  # type: ignore[attr-defined]
    finally:
        h.engine.stop()
        h.store.close()


def test_killed_tmux_server_marks_jobs_lost_and_retries(
    harness: Harness, tmp_path: Path, tmux_socket: str
) -> None:
    marker = tmp_path / "runs"
    (job,) = harness.submit(
        f"""
        [[job]]
        name = "survivor"
        gpus = 0
        retries = 1
        retry_backoff = 1
        command = "echo run >> {marker}; if [ $(wc -l < {marker}) -lt 2 ]; then sleep 300; fi"
        """,
        tmp_path,
    )
    harness.wait_state(job.id, JobState.RUNNING)
    wait_for(marker.exists, 15, "first attempt")
    subprocess.run(["tmux", "-L", tmux_socket, "kill-server"], check=True)
    done = harness.wait_state(job.id, JobState.COMPLETED, timeout=40)
    assert done.attempts == 2
    retry = [e for e in harness.events if e.kind == "job_retrying"]
    assert retry and "lost" in retry[0].reason  # type: ignore[attr-defined]


def _run_batch_cmd(home: Path, socket: str, batch: Path, *extra: str) -> list[str]:
    import sys

    return [
        sys.executable,
        "-m",
        "loradeck.core.cli",
        "--home",
        str(home),
        "--gpus",
        "sim:2",
        "--tmux-socket",
        socket,
        "--tmux-session",
        "ld",
        "--run-batch",
        str(batch),
        *extra,
    ]


def test_run_batch_exit_codes(tmp_path: Path, tmux_socket: str) -> None:
    good = write(
        tmp_path / "good.toml",
        '[[job]]\nname = "a"\ncommand = "echo a"\n[[job]]\nname = "b"\ncommand = "echo b"\ndepends_on = ["a"]\n',
    )
    out = subprocess.run(
        _run_batch_cmd(tmp_path / "h1", tmux_socket, good),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "2 jobs: 2 completed" in out.stdout
    assert "job 1 a started on GPU" in out.stdout  # plain lines without a terminal
    bad = write(tmp_path / "bad.toml", '[[job]]\nname = "a"\ncommand = "exit 1"\n')
    out = subprocess.run(
        _run_batch_cmd(tmp_path / "h2", tmux_socket, bad),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "1 failed" in out.stdout
    invalid = write(tmp_path / "invalid.toml", '[[job]]\nname = "a"\ncomand = "exit 1"\n')
    out = subprocess.run(
        _run_batch_cmd(tmp_path / "h3", tmux_socket, invalid),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "comand" in out.stderr


def test_sigkilled_engine_resumes_and_runs_each_job_once(tmp_path: Path, tmux_socket: str) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    jobs = "".join(
        f'[[job]]\nname = "j{i}"\ncommand = "echo $LORADECK_JOB_ID >> {runs}/j{i}; sleep 2"\n'
        for i in range(6)
    )
    batch = write(tmp_path / "batch.toml", jobs)
    home = tmp_path / "home"
    first = subprocess.Popen(
        _run_batch_cmd(home, tmux_socket, batch),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: len(list(runs.iterdir())) >= 2, 60, "two jobs to start")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    out = subprocess.run(
        _run_batch_cmd(home, tmux_socket, batch), capture_output=True, text=True, timeout=180
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "resuming batch 1" in out.stderr
    for i in range(6):
        assert (runs / f"j{i}").read_text().count("\n") == 1, (
            f"j{i} ran {(runs / f'j{i}').read_text()!r}"
        )
    listing = subprocess.run(
        [*_run_batch_cmd(home, tmux_socket, batch)[:5], "list", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(json.loads(listing.stdout)) == 6


def test_hostile_names_and_commands_run_exactly(harness: Harness, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    name = "a'; rm -rf ~; '\nzwölf.name:with dots $(touch " + str(canary) + ")"
    command = "printf '%s\\n' \"a;b\" '$(touch " + str(canary) + ")' \"it's\" ünïcødé"
    job = harness.submit(
        f"[[job]]\nname = {json.dumps(name)}\ncommand = {json.dumps(command)}\ngpus = 0\n", tmp_path
    )[0]
    done = harness.wait_state(job.id, JobState.COMPLETED)
    assert done.log_file.read_text().splitlines()[-4:] == [
        "a;b",
        "$(touch " + str(canary) + ")",
        "it's",
        "ünïcødé",
    ]
    assert not canary.exists()


def test_engine_stop_leaves_running_jobs_running(tmp_path: Path, tmux_socket: str) -> None:
    h = Harness(tmp_path / "home", tmux_socket)
    h.engine.start()
    (job,) = h.submit('[[job]]\nname = "long"\ncommand = "sleep 300"\ngpus = 0\n', tmp_path)
    h.wait_state(job.id, JobState.RUNNING)
    wait_for(lambda: h.engine.executor.pids(h.job(job.id)), 10, "the job's processes")
    h.engine.stop()
    again = Harness(tmp_path / "home", tmux_socket)
    again.engine.start()
    try:
        wait_for(lambda: any(e.kind == "job_adopted" for e in again.events), 10, "adoption")
        assert again.job(job.id).state == JobState.RUNNING
        again.store.update(job.id, lambda j: cancel_job(j, time.time()))
        again.wait_state(job.id, JobState.CANCELLED)
    finally:
        again.engine.stop()
        again.store.close()
        h.store.close()

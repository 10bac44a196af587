"""run.sh, the bounded log tee and the process-tree killer, without tmux."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tmux_fixtures import wait_until

from loradeck.core.errors import ExecutorError
from loradeck.core.executor.jobfiles import AttemptInfo, JobFiles
from loradeck.core.executor.logtee import (
    BoundedLog,
    marker_line,
    run,
    tail_offset,
)
from loradeck.core.executor.proctree import (
    TOKEN_VAR,
    find_tree,
    job_tag,
    kill_tree,
    verified_root,
)
from loradeck.core.executor.runscript import (
    FirstStage,
    RunSpec,
    render_run_script,
    write_run_files,
)
from loradeck.core.models import Job, JobSpec

TOKEN = "0123456789abcdef0123456789abcdef"

RunJob = Callable[..., tuple[Job, subprocess.CompletedProcess[bytes]]]


def _job(folder: Path, command: str, *, name: str = "job", attempts: int = 1, **spec: Any) -> Job:
    return Job(
        id=7,
        spec=JobSpec(name=name, command=command, **spec),
        command=command,
        output_dir=folder / "out",
        log_file=folder / "output.log",
        created_at=time.time(),
        attempts=attempts,
    )


@pytest.fixture
def run_job(tmp_path: Path) -> RunJob:
    """Write run.sh for a job and run it in a new session (as tmux would); the job and
    the finished process (stdout is what the pane would show)."""
    counter = iter(range(10_000))

    def go(
        command: str,
        *,
        proc_env: Mapping[str, str] | None = None,
        gpu_ids: tuple[int, ...] = (0,),
        extra_env: Mapping[str, str] | None = None,
        gpus_from_var: str | None = None,
        first_stage: FirstStage | None = None,
        max_log_bytes: int = 1 << 20,
        launch_guard: bool = False,
        attempt_file: bool = True,
        **spec: Any,
    ) -> tuple[Job, subprocess.CompletedProcess[bytes]]:
        job = _job(tmp_path / f"job{next(counter)}", command, **spec)
        JobFiles.of(job).prepare(job)
        write_run_files(
            RunSpec(
                job=job,
                attempt=job.attempts,
                gpu_ids=gpu_ids,
                token=TOKEN,
                python=sys.executable,
                max_log_bytes=max_log_bytes,
                extra_env=extra_env or {},
                gpus_from_var=gpus_from_var,
                first_stage=first_stage,
                launch_guard=launch_guard,
            )
        )
        if attempt_file:
            JobFiles.of(job).write_attempt(AttemptInfo(job.attempts, TOKEN, "@1", time.time()))
        done = subprocess.run(
            ["bash", str(JobFiles.of(job).run_script)],
            capture_output=True,
            start_new_session=True,
            env={**os.environ, **(proc_env or {})},
            timeout=60,
            check=False,
        )
        return job, done

    return go


def _status(job: Job) -> dict[str, object]:
    data: dict[str, object] = json.loads(JobFiles.of(job).exit_status.read_text())
    return data


# --------------------------------------------------------------------------- run.sh


def test_status_is_the_commands_and_output_goes_to_pane_and_log(run_job: RunJob) -> None:
    job, done = run_job("echo to-out; echo to-err >&2; exit 7")
    assert done.returncode == 7
    assert job.log_file.read_text() == "to-out\nto-err\n"
    assert done.stdout.startswith(b"to-out\nto-err\n")
    assert b"[loradeck] job 7 exited with status 7" in done.stdout
    status = _status(job)
    assert (status["attempt"], status["exit_code"], status["signal"]) == (1, 7, None)
    assert status["log_status"] == 0
    assert isinstance(status["ended_at"], float)
    assert int(JobFiles.of(job).pid_file.read_text()) > 0
    assert not list(JobFiles.of(job).folder.glob(".*tmp"))  # the temp file was renamed


@pytest.fixture(scope="module")
def gnu_first_stage() -> FirstStage:
    """GNU coreutils' dd and tee, with a first stage of four 64-byte reads, so that the
    hand-over to the python tee happens after 256 bytes at most."""
    found = FirstStage.find()
    assert found is not None, "these tests need GNU coreutils (dd, tee) on PATH"
    return FirstStage(dd=found.dd, tee=found.tee, block=64, reads=4)


@pytest.mark.parametrize("size", [0, 1, 63, 64, 255, 256, 257, 5000, 200_000])
@pytest.mark.parametrize("staged", [True, False])
def test_the_log_and_pane_get_every_byte_whichever_tee(
    run_job: RunJob, gnu_first_stage: FirstStage, tmp_path: Path, size: int, staged: bool
) -> None:
    data = bytes((i * 7 + i // 13) % 256 for i in range(size))  # NULs, newlines, all bytes
    source = tmp_path / f"data-{size}"
    source.write_bytes(data)
    # Written in pieces, so that the first stage sees several short reads.
    command = f"for s in 0 100 {size}; do tail -c +$((s+1)) {source} | head -c 100; done; "
    command += f"tail -c +201 {source}"
    job, done = run_job(command, first_stage=gnu_first_stage if staged else None)
    assert done.returncode == 0
    assert job.log_file.read_bytes() == data
    assert done.stdout.startswith(data)
    assert _status(job)["log_status"] == 0
    ahead = JobFiles.of(job).folder / ".tee_next"
    assert not ahead.exists() or ahead.read_bytes() == b""  # consumed when python took over


def test_the_first_stage_keeps_the_bound(
    run_job: RunJob, gnu_first_stage: FirstStage, tmp_path: Path
) -> None:
    lines = b"".join(b"%d\n" % i for i in range(30_000))
    source = tmp_path / "flood"
    source.write_bytes(lines)
    job, done = run_job(f"cat {source}", first_stage=gnu_first_stage, max_log_bytes=8192)
    assert done.returncode == 0
    assert done.stdout.startswith(lines)
    data = job.log_file.read_bytes()
    head, marker, tail = data.partition(marker_line(8192))
    assert marker
    assert lines.startswith(head)
    assert lines.endswith(tail) and tail.endswith(b"29999\n")
    assert len(data) <= 8192 + len(marker) + 1


def test_the_first_stage_follows_live_output(
    run_job: RunJob, gnu_first_stage: FirstStage, tmp_path: Path
) -> None:
    """What a job prints reaches the log at once, not when a buffer fills: the job
    below goes on only once its first line is in the log."""
    log = tmp_path / "job0" / "output.log"
    command = f"echo first; until grep -q first {log}; do sleep 0.05; done; echo second"
    job, done = run_job(command, first_stage=gnu_first_stage)
    assert job.log_file.read_bytes() == b"first\nsecond\n"
    assert done.returncode == 0


def test_the_first_stage_is_only_gnu_coreutils(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gnu_first_stage: FirstStage
) -> None:
    """busybox or BSD dd may read past their count: then the python tee does it all."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "dd").write_text("#!/bin/sh\necho 'BusyBox v1.36.1 multi-call binary.'\n")
    (fake / "dd").chmod(0o755)
    os.symlink(gnu_first_stage.tee, fake / "tee")
    monkeypatch.setenv("PATH", str(fake))
    assert FirstStage.find() is None
    os.unlink(fake / "dd")
    os.symlink(gnu_first_stage.dd, fake / "dd")
    assert FirstStage.find() == FirstStage(dd=str(fake / "dd"), tee=str(fake / "tee"))


@pytest.mark.parametrize(
    ("token", "attempt_file"), [("someone-else", True), (TOKEN, False), (None, True)]
)
def test_a_window_opened_for_another_launch_runs_nothing(
    run_job: RunJob, tmp_path: Path, token: str | None, attempt_file: bool
) -> None:
    """The tmux executor's guard: run.sh runs its command only with its own token in
    its environment and in attempt.json (see RunSpec.launch_guard)."""
    canary = tmp_path / "canary"
    env = {TOKEN_VAR: token} if token is not None else {}
    job, done = run_job(
        f"touch {canary}", launch_guard=True, attempt_file=attempt_file, proc_env=env
    )
    assert done.returncode == 0
    assert b"nothing was run" in done.stdout
    assert not canary.exists()
    assert not JobFiles.of(job).exit_status.exists()
    assert not JobFiles.of(job).pid_file.exists()


def test_the_guard_lets_its_own_launch_run(run_job: RunJob, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    job, done = run_job(f"touch {canary}", launch_guard=True, proc_env={TOKEN_VAR: TOKEN})
    assert done.returncode == 0
    assert canary.exists()
    assert _status(job)["exit_code"] == 0


def test_killed_by_a_signal(run_job: RunJob) -> None:
    job, _ = run_job("kill -TERM $$")
    status = _status(job)
    assert (status["exit_code"], status["signal"]) == (143, 15)


HOSTILE = [
    "a'; rm -rf ~; '",
    "$(touch {canary})",
    "`touch {canary}`",
    'quote " and \\ backslash; touch {canary}',
    "new\nline\n",
    "ünïcødé 训练 🚀",
    "-n",
    "${{HOME}} $$ !! *",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_names_and_env_values_pass_literally(run_job: RunJob, tmp_path: Path, value: str) -> None:
    canary = tmp_path / "canary"
    value = value.format(canary=canary)
    job, done = run_job(
        'printf "%s\\0" "$LORADECK_JOB_NAME" "$USER_VAR" "$EXTRA"',
        name=value,
        env={"USER_VAR": value},
        extra_env={"EXTRA": value},
    )
    assert done.returncode == 0
    assert job.log_file.read_text() == f"{value}\0" * 3
    assert not canary.exists()


def test_exports(run_job: RunJob, tmp_path: Path) -> None:
    job, _ = run_job(
        'printf "%s|" "$CUDA_VISIBLE_DEVICES" "$CUDA_DEVICE_ORDER" "$LORADECK_JOB_ID" '
        '"$LORADECK_ATTEMPT" "$LORADECK_RUN_TOKEN" "$LORADECK_OUTPUT_DIR" "$PYTHONUNBUFFERED" '
        '"$LORADECK_JOB_ID_COPY" "$PWD"',
        gpu_ids=(2, 5),
        extra_env={"LORADECK_JOB_ID_COPY": "x"},
    )
    assert job.log_file.read_text().split("|")[:9] == [
        "2,5",
        "PCI_BUS_ID",
        "7",
        "1",
        TOKEN,
        str(job.output_dir),
        "1",
        "x",
        str(job.output_dir),
    ]


@pytest.mark.parametrize(("given", "seen"), [("3,1", "3,1"), (None, "")])
def test_gpus_can_come_from_a_variable_set_at_run_time(
    run_job: RunJob, given: str | None, seen: str
) -> None:
    """The Slurm executor's case: the GPUs are the ones Slurm gave, read when run.sh runs;
    a job's env cannot set that variable to pick other GPUs."""
    proc_env = {"GIVEN_GPUS": given} if given is not None else {}
    job, _ = run_job(
        'printf "%s|" "$CUDA_VISIBLE_DEVICES"',
        gpu_ids=(),
        gpus_from_var="GIVEN_GPUS",
        proc_env=proc_env,
    )
    assert job.log_file.read_text() == f"{seen}|"


def test_gpus_from_var_must_be_a_variable_name(tmp_path: Path) -> None:
    job = _job(tmp_path, "true")
    spec = RunSpec(
        job=job,
        attempt=1,
        gpu_ids=(),
        token=TOKEN,
        python=sys.executable,
        max_log_bytes=1024,
        gpus_from_var="X; rm -rf /",
    )
    with pytest.raises(ValueError, match="shell variable name"):
        render_run_script(spec)


def test_bad_env_names_are_refused(tmp_path: Path) -> None:
    job = _job(tmp_path, "true")
    spec = RunSpec(
        job=job,
        attempt=1,
        gpu_ids=(),
        token=TOKEN,
        python=sys.executable,
        max_log_bytes=4096,
        extra_env={"BAD NAME": "x"},
    )
    with pytest.raises(ExecutorError, match="not a valid environment variable name"):
        render_run_script(spec)


def test_a_venv_is_activated(run_job: RunJob, tmp_path: Path) -> None:
    venv = tmp_path / "my venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text(
        f'export VIRTUAL_ENV="{venv}"\nexport PATH="$VIRTUAL_ENV/bin:$PATH"\n'
        "export CUDA_VISIBLE_DEVICES=9\n"  # loradeck's own variables win
    )
    tool = venv / "bin" / "venv-tool"
    tool.write_text("#!/bin/sh\necho from-venv\n")
    tool.chmod(0o755)
    job, _ = run_job('echo "$VIRTUAL_ENV|$CUDA_VISIBLE_DEVICES"; venv-tool', venv=venv)
    assert job.log_file.read_text() == f"{venv}|0\nfrom-venv\n"


def test_a_conda_env_is_activated(run_job: RunJob, tmp_path: Path) -> None:
    bin_dir = tmp_path / "fake-conda-bin"
    bin_dir.mkdir()
    conda = bin_dir / "conda"
    # `conda shell.bash hook` prints a shell function named conda; this one records the env.
    conda.write_text(
        "#!/bin/sh\n"
        '[ "$1" = shell.bash ] && [ "$2" = hook ] || exit 9\n'
        'echo \'conda() { [ "$1" = activate ] && export CONDA_DEFAULT_ENV="$2"; }\'\n'
    )
    conda.chmod(0o755)
    canary = tmp_path / "conda-canary"
    env_name = f"my env; touch {canary}"
    job, _ = run_job(
        'printf "%s" "$CONDA_DEFAULT_ENV"',
        conda=env_name,
        proc_env={"PATH": f"{bin_dir}:{os.environ['PATH']}"},
    )
    assert job.log_file.read_text() == env_name
    assert not canary.exists()


def test_no_conda_is_a_clear_launch_error(run_job: RunJob, tmp_path: Path) -> None:
    if (
        any(Path(p, "conda").exists() for p in os.environ["PATH"].split(":"))
        or Path("/opt/conda/bin/conda").exists()
    ):
        pytest.skip("conda is installed here")
    env = {"HOME": str(tmp_path), "CONDA_EXE": ""}
    job, done = run_job("echo never", conda="base", proc_env=env)
    assert done.returncode == 127
    assert "conda is not installed" in job.log_file.read_text()
    assert "never" not in job.log_file.read_text()
    assert "conda is not installed" in JobFiles.of(job).launch_error.read_text()


def test_the_previous_attempt_is_set_aside(tmp_path: Path) -> None:
    job = _job(tmp_path, "true", attempts=1)
    files = JobFiles.of(job)
    files.prepare(job)
    job.log_file.write_text("first\n")
    files.exit_status.write_text(json.dumps({"attempt": 1, "exit_code": 3}))
    files.pid_file.write_text("12345\n")
    second = job.evolve(attempts=2)
    assert files.result(2) is None  # attempt 1's status never answers for attempt 2
    files.prepare(second)
    assert not files.exit_status.exists()
    assert not files.pid_file.exists()
    assert json.loads((files.folder / "exit_status.1").read_text())["exit_code"] == 3
    assert Path(f"{job.log_file}.1").read_text() == "first\n"
    assert job.log_file.read_text() == ""  # the new log exists before the job starts


def test_a_damaged_status_file_is_an_error(tmp_path: Path) -> None:
    job = _job(tmp_path, "true")
    files = JobFiles.of(job)
    files.prepare(job)
    files.exit_status.write_text("{not json")
    with pytest.raises(ExecutorError, match="not valid JSON"):
        files.result(1)


# --------------------------------------------------------------------------- log tee


def _tee(data_chunks: list[bytes], log: Path, max_bytes: int) -> tuple[int, bytes]:
    """Run the tee in-process between two pipes; (status, what reached "the pane")."""
    src_r, src_w = os.pipe()
    out_r, out_w = os.pipe()
    pane = bytearray()

    def feed() -> None:
        for chunk in data_chunks:
            os.write(src_w, chunk)
        os.close(src_w)

    def drain() -> None:
        while block := os.read(out_r, 1 << 16):
            pane.extend(block)

    threads = [threading.Thread(target=feed), threading.Thread(target=drain)]
    for thread in threads:
        thread.start()
    status = run(log, max_bytes, stdin=src_r, stdout=out_w)
    os.close(out_w)
    for thread in threads:
        thread.join()
    os.close(src_r)
    os.close(out_r)
    return status, bytes(pane)


def test_small_output_is_copied_exactly(tmp_path: Path) -> None:
    data = [b"line 1\n", b"\rprogress 50%\rprogress 100%\n", bytes(range(256))]
    status, pane = _tee(data, tmp_path / "log", 1 << 20)
    assert status == 0
    assert pane == b"".join(data)
    assert (tmp_path / "log").read_bytes() == b"".join(data)
    assert tail_offset(tmp_path / "log") == 0


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    max_bytes=st.integers(min_value=4096, max_value=20_000),
    chunks=st.lists(
        st.tuples(st.integers(min_value=1, max_value=9000), st.booleans()), max_size=30
    ),
)
def test_bounded_log_keeps_head_marker_and_true_tail(
    tmp_path: Path, max_bytes: int, chunks: list[tuple[int, bool]]
) -> None:
    path = tmp_path / "bounded.log"
    log = BoundedLog(path, max_bytes)
    written = bytearray()
    for size, lines in chunks:
        start = len(written)
        if lines:  # numbered lines, so that line cuts are exercised
            text = "".join(f"{i}\n" for i in range(start, start + size))[:size].encode()
        else:
            text = bytes((start + i) % 251 for i in range(size))
        log.write(text)
        written.extend(text)
    log.close()
    data = path.read_bytes()
    marker = marker_line(max_bytes)
    if len(written) <= max_bytes:
        assert data == written
        return
    assert len(data) <= max_bytes + len(marker) + 1
    assert data.count(marker) == 1
    prefix = data[: data.index(marker)]
    head = prefix if written.startswith(prefix) else prefix[:-1]
    assert prefix in (head, head + b"\n")
    assert written.startswith(head)
    assert 0 < len(head) <= max_bytes // 2
    tail = data[tail_offset(path) :]
    assert data == prefix + marker + tail
    assert written.endswith(tail)
    assert len(tail) >= max_bytes // 4 - max_bytes // 16


def test_a_resumed_log_goes_on_where_another_writer_stopped(tmp_path: Path) -> None:
    path = tmp_path / "log"
    lines = b"".join(b"%d\n" % i for i in range(5000))
    first = BoundedLog(path, 4096)
    first.write(lines[:3000])  # within the bound: exactly the output so far
    first.close()
    src_r, src_w = os.pipe()
    os.write(src_w, lines[3001:])
    os.close(src_w)
    with open(os.devnull, "wb") as pane:
        assert (
            run(path, 4096, stdin=src_r, stdout=pane.fileno(), resume=True, first=lines[3000:3001])
            == 0
        )
    os.close(src_r)
    data = path.read_bytes()
    head, marker, tail = data.partition(marker_line(4096))
    assert marker and lines.startswith(head) and lines.endswith(tail)
    # A log already cut (marker and all) is resumed with its head kept.
    again = BoundedLog(path, 4096, resume=True)
    assert again.head_end == tail_offset(path) > 0
    again.write(b"more\n" * 2000)
    again.close()
    data = path.read_bytes()
    assert data.startswith(head + marker)
    assert data.count(marker) == 1
    assert data.endswith(b"more\n")


def test_flood_through_the_tee_keeps_the_tail(tmp_path: Path) -> None:
    lines = b"".join(b"%d\n" % i for i in range(200_000))
    status, pane = _tee(
        [lines[i : i + 65536] for i in range(0, len(lines), 65536)], tmp_path / "log", 100_000
    )
    assert status == 0
    assert pane == lines
    data = (tmp_path / "log").read_bytes()
    head, _, tail = data.partition(marker_line(100_000))
    assert lines.startswith(head)
    assert lines.endswith(tail)
    assert tail.endswith(b"199999\n")
    assert tail[:1] != b"\n" and lines.find(b"\n" + tail) != -1  # starts at a line start


def test_the_log_goes_on_when_the_pane_is_gone(tmp_path: Path) -> None:
    src_r, src_w = os.pipe()
    out_r, out_w = os.pipe()
    os.close(out_r)  # nobody reads the pane any more
    os.write(src_w, b"still logged\n")
    os.close(src_w)
    assert run(tmp_path / "log", 1 << 20, stdin=src_r, stdout=out_w) == 0
    os.close(src_r)
    os.close(out_w)
    assert (tmp_path / "log").read_bytes() == b"still logged\n"


def test_an_unwritable_log_still_feeds_the_pane(tmp_path: Path) -> None:
    status, pane = _tee([b"hello\n"], tmp_path / "missing" / "log", 1 << 20)
    assert status == 1
    assert b"cannot write the log" in pane
    assert pane.endswith(b"hello\n")


def test_the_tee_outlives_sigint_and_sigterm(tmp_path: Path) -> None:
    from loradeck.core.executor.runscript import LOGTEE_SCRIPT

    log = tmp_path / "log"
    tee = subprocess.Popen(
        [sys.executable, "-I", "-S", str(LOGTEE_SCRIPT), "--max-bytes", "4096", "--", str(log)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    assert tee.stdin is not None
    tee.stdin.write(b"before\n")
    tee.stdin.flush()
    wait_until(lambda: log.exists() and log.read_bytes() == b"before\n", what="the tee")
    tee.send_signal(signal.SIGINT)
    tee.send_signal(signal.SIGTERM)
    tee.stdin.write(b"after\n")
    tee.stdin.close()
    assert tee.wait(timeout=10) == 0
    assert log.read_bytes() == b"before\nafter\n"


# --------------------------------------------------------------------------- proctree


def _spawn_tree(token: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["bash", "-c", "sleep 300 & setsid sleep 301 & bash -c 'sleep 302 & wait' & wait"],
        start_new_session=True,
        env={**os.environ, TOKEN_VAR: token, "LORADECK_JOB_ID": "42"},
    )


def _sleeps(token: str) -> list[psutil.Process]:
    procs = find_tree(None, token=token)
    return procs if sum(p.name() == "sleep" for p in procs) == 3 else []


def test_kill_tree_finds_and_kills_escaped_processes() -> None:
    token = os.urandom(8).hex()
    root = _spawn_tree(token)
    try:
        procs = wait_until(lambda: _sleeps(token), what="the tree to start")
        assert {p.pid for p in find_tree(root.pid, token=token)} >= {p.pid for p in procs}
        assert job_tag(procs[0].pid) is not None
        assert job_tag(procs[0].pid).job_id == 42  # type: ignore[union-attr]
        assert kill_tree(root.pid, grace=0.2, token=token) == []
        root.wait(timeout=10)
        assert find_tree(None, token=token) == []
    finally:
        root.kill()
        root.wait()


def test_a_recycled_pid_is_not_the_root() -> None:
    token = os.urandom(8).hex()
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        assert verified_root(other.pid, token) is None  # it lacks the token
        assert kill_tree(other.pid, grace=0.1, token=token) == []
        assert other.poll() is None  # untouched
    finally:
        other.kill()
        other.wait()


def test_never_this_process() -> None:
    assert os.getpid() not in {p.pid for p in find_tree(os.getpid())}

"""The tmux executor with real tmux (private socket) and real processes."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tmux_fixtures import *  # noqa: F403 - the fixtures, used by name
from tmux_fixtures import TEST_SESSION, MakeJob, log_text, pane_text, wait_status, wait_until

from loradeck.core.errors import ExecutorError
from loradeck.core.executor import AttemptStatus, TmuxExecutor, safe_window_name
from loradeck.core.executor.jobfiles import JobFiles
from loradeck.core.executor.logtee import marker_line, tail_offset
from loradeck.core.executor.tmux_server import TmuxServer, server_environment
from loradeck.core.models import Job

pytestmark = pytest.mark.slow


def _launch(executor: TmuxExecutor, job: Job, gpus: tuple[int, ...] = ()) -> Job:
    ref = executor.launch(job, gpus)
    return job.evolve(executor_ref=ref)


def _ref(job: Job) -> str:
    assert job.executor_ref is not None
    return job.executor_ref


def _window_names(socket: str) -> dict[str, str]:
    out = subprocess.run(
        ["tmux", "-L", socket, "list-windows", "-a", "-F", "#{window_id}\t#{window_name}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split("\t", 1) for line in out.splitlines())


# --------------------------------------------------------------------------- output


def test_output_reaches_the_log_and_the_pane(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob, tmux_exec_socket: str
) -> None:
    job = _launch(tmux_executor, make_tmux_job("echo out-line; echo err-line >&2; exit 0"))
    result = wait_status(tmux_executor, job)
    assert result.exit_code == 0
    assert result.signal is None
    assert job.log_file.read_text() == "out-line\nerr-line\n"
    text = wait_until(
        lambda: (t := pane_text(tmux_exec_socket, job.executor_ref)) and "err-line" in t and t,
        what="the pane to show the output",
    )
    assert "out-line" in text


@pytest.mark.parametrize(
    ("command", "exit_code", "sig"),
    [("true", 0, None), ("exit 3", 3, None), ("kill -KILL $$", 137, 9)],
)
def test_exit_status_is_recorded(
    tmux_executor: TmuxExecutor,
    make_tmux_job: MakeJob,
    command: str,
    exit_code: int,
    sig: int | None,
) -> None:
    job = _launch(tmux_executor, make_tmux_job(command))
    result = wait_status(tmux_executor, job)
    assert (result.exit_code, result.signal) == (exit_code, sig)
    assert result.ended_at is not None
    recorded = json.loads(JobFiles.of(job).exit_status.read_text())
    assert recorded["attempt"] == 1
    assert recorded["exit_code"] == exit_code


def test_environment_gpus_and_workdir(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob, tmp_path: Path
) -> None:
    workdir = tmp_path / "work dir"
    workdir.mkdir()
    canary = tmp_path / "env-canary"
    job = make_tmux_job(
        'printf "%s|" "$CUDA_VISIBLE_DEVICES" "$CUDA_DEVICE_ORDER" "$LORADECK_JOB_ID" '
        '"$LORADECK_OUTPUT_DIR" "$MY_VAR" "$PWD"',
        env={"MY_VAR": f"$(touch {canary}) `touch {canary}` ' \" ;", "CUDA_VISIBLE_DEVICES": "7"},
        workdir=workdir,
    )
    job = _launch(tmux_executor, job, (1, 3))
    assert wait_status(tmux_executor, job).exit_code == 0
    fields = job.log_file.read_text().split("|")
    assert fields[:6] == [
        "1,3",  # the job's own env cannot override the GPUs it was given
        "PCI_BUS_ID",
        str(job.id),
        str(job.output_dir),
        f"$(touch {canary}) `touch {canary}` ' \" ;",
        str(workdir),
    ]
    assert not canary.exists()
    assert job.output_dir.is_dir()


def test_a_cpu_job_sees_no_gpu(tmux_executor: TmuxExecutor, make_tmux_job: MakeJob) -> None:
    job = _launch(tmux_executor, make_tmux_job('printf "[%s]" "${CUDA_VISIBLE_DEVICES-unset}"'))
    wait_status(tmux_executor, job)
    assert job.log_file.read_text() == "[]"


HOSTILE_NAMES = [
    "a'; rm -rf ~; '",
    'x"; touch {canary}; echo "',
    "$(touch {canary})",
    "`touch {canary}`",
    "dots.and:colons.in:name",
    "line one\nline two; touch {canary}",
    "ünïcødé 训练 🚀 #{{window_id}} %s",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_names_are_never_run(
    tmux_executor: TmuxExecutor,
    make_tmux_job: MakeJob,
    tmux_exec_socket: str,
    tmp_path: Path,
    name: str,
) -> None:
    canary = tmp_path / "name-canary"
    name = name.format(canary=canary)
    job = make_tmux_job('printf "%s" "$LORADECK_JOB_NAME"', name=name)
    job = _launch(tmux_executor, job)
    assert wait_status(tmux_executor, job).exit_code == 0
    assert job.log_file.read_text() == name
    assert not canary.exists()
    window_name = _window_names(tmux_exec_socket)[_ref(job)]
    assert window_name == safe_window_name(job.id, name)
    assert not set(window_name) & set(".:'\"$`;#\n ")


def test_hostile_command_runs_exactly_as_given(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob, tmp_path: Path
) -> None:
    canary = tmp_path / "cmd-canary"
    command = (
        """printf '%s\\n' "$(echo hi)" ; echo 'it''s' ; echo "a;b"\n"""
        f"""echo '$(touch {canary})' "\\$(touch {canary})" ; echo 'x'\\''y' ; echo ünï"""
    )
    job = _launch(tmux_executor, make_tmux_job(command, name="cmd.test:1"))
    assert wait_status(tmux_executor, job).exit_code == 0
    assert job.log_file.read_text() == (
        f"hi\nits\na;b\n$(touch {canary}) $(touch {canary})\nx'y\nünï\n"
    )
    assert not canary.exists()
    assert JobFiles.of(job).command_script.read_text() == command + "\n"


# --------------------------------------------------------------------------- stop


def _sessions(procs: list[psutil.Process]) -> set[int]:
    return {os.getsid(p.pid) for p in procs}


def test_stop_kills_the_whole_tree_including_an_escaped_setsid_child(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob
) -> None:
    command = (
        "sleep 300 & sleep 301 & setsid sleep 302 & bash -c 'sleep 303 & sleep 304 & wait' & wait"
    )
    job = _launch(tmux_executor, make_tmux_job(command))

    def tree() -> list[psutil.Process]:
        procs = [psutil.Process(pid) for pid in tmux_executor.pids(job)]
        sleeps = [p for p in procs if p.name() == "sleep"]
        return procs if len(sleeps) == 5 else []

    procs = wait_until(tree, what="all five sleeps to start")
    assert len(_sessions(procs)) == 2  # the setsid sleep really left the job's session
    tmux_executor.stop(job, grace=0.5)
    assert not [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert tmux_executor.pids(job) == []
    result = tmux_executor.poll(job)
    assert result.status == AttemptStatus.EXITED
    assert result.signal == signal.SIGINT  # bash running command.sh died of SIGINT


def test_stop_escalates_to_sigkill_when_signals_are_ignored(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob
) -> None:
    # The trap makes every child ignore SIGINT and SIGTERM: only SIGKILL ends them.
    job = _launch(
        tmux_executor,
        make_tmux_job("trap '' INT TERM; echo ready; sleep 300 & setsid sleep 301 & wait"),
    )
    procs = wait_until(
        lambda: len(tmux_executor.pids(job)) >= 5 and tmux_executor.pids(job),
        what="the job's processes",
    )
    wait_until(lambda: "ready" in log_text(job), what="the job to start")
    tmux_executor.stop(job, grace=0.3)
    assert not [pid for pid in procs if psutil.pid_exists(pid) and _alive(pid)]
    result = wait_status(tmux_executor, job)
    # run.sh survives (it traps), records how its command ended: SIGKILL.
    assert (result.exit_code, result.signal, result.stopped) == (137, 9, False)
    assert "ready" in job.log_file.read_text()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_stop_lets_a_job_say_its_last_words(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob
) -> None:
    command = "trap 'echo saving checkpoint; exit 5' INT; echo started; sleep 300"
    job = _launch(tmux_executor, make_tmux_job(command))
    wait_until(lambda: "started" in log_text(job), what="the job to start")
    tmux_executor.stop(job, grace=5.0)
    assert wait_status(tmux_executor, job).exit_code == 5
    assert job.log_file.read_text() == "started\nsaving checkpoint\n"


def test_stop_of_a_finished_job_is_harmless(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob
) -> None:
    job = _launch(tmux_executor, make_tmux_job("exit 4"))
    wait_status(tmux_executor, job)
    tmux_executor.stop(job, grace=0.1)
    assert tmux_executor.poll(job).exit_code == 4


# --------------------------------------------------------------------------- recovery


def test_killing_the_tmux_server_makes_running_jobs_lost(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob
) -> None:
    done = _launch(tmux_executor, make_tmux_job("exit 2"))
    running = _launch(tmux_executor, make_tmux_job("echo up; sleep 300"))
    wait_status(tmux_executor, done)
    wait_until(lambda: "up" in log_text(running), what="the job to start")
    assert tmux_executor.poll(running).status == AttemptStatus.RUNNING
    tmux_executor.server.kill()
    lost = wait_status(tmux_executor, running, AttemptStatus.LOST, timeout=10)
    assert lost.exit_code is None
    assert tmux_executor.poll(done).exit_code == 2  # a recorded status survives
    assert tmux_executor.adopt() == {}
    wait_until(lambda: not tmux_executor.pids(running), what="the job's processes to die")


def test_adopt_finds_windows_again(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob, tmux_exec_socket: str
) -> None:
    first = _launch(tmux_executor, make_tmux_job("sleep 300", name="first"))
    second = _launch(tmux_executor, make_tmux_job("exit 1", name="second", attempts=3))
    wait_status(tmux_executor, second)
    # A new executor (a restarted engine) sees both, from tmux alone.
    restarted = TmuxExecutor(session=TEST_SESSION, socket_name=tmux_exec_socket)
    # The status is written just before the runner exits and tmux notices.
    found = wait_until(
        lambda: (f := restarted.adopt()) and not f[_ref(second)].alive and f,
        what="the second window's pane to die",
    )
    assert {ref: (a.job_id, a.attempt, a.alive) for ref, a in found.items()} == {
        first.executor_ref: (first.id, 1, True),
        second.executor_ref: (second.id, 3, False),
    }
    assert found[first.executor_ref].name == "1-first"
    tmux_executor.stop(first, grace=0.2)


def test_a_new_attempt_never_reads_the_old_status(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob
) -> None:
    job = _launch(tmux_executor, make_tmux_job("echo attempt $LORADECK_ATTEMPT; exit 3"))
    assert wait_status(tmux_executor, job).exit_code == 3
    tmux_executor.close_window(job)
    retry = _launch(tmux_executor, job.evolve(attempts=2, executor_ref=None))
    result = wait_status(tmux_executor, retry)
    assert result.exit_code == 3
    assert retry.log_file.read_text() == "attempt 2\n"
    assert Path(f"{retry.log_file}.1").read_text() == "attempt 1\n"
    old = json.loads((JobFiles.of(job).folder / "exit_status.1").read_text())
    assert old["attempt"] == 1
    # The previous attempt's handle does not answer for the new one.
    assert tmux_executor.poll(job).status == AttemptStatus.LOST


# --------------------------------------------------------------------------- windows


def test_windows_stay_after_exit_until_closed(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob, tmux_exec_socket: str
) -> None:
    job = _launch(tmux_executor, make_tmux_job("echo bye; exit 1"))
    wait_status(tmux_executor, job)
    assert job.executor_ref in _window_names(tmux_exec_socket)
    wait_until(lambda: "bye" in pane_text(tmux_exec_socket, job.executor_ref), what="output")
    wait_until(lambda: not tmux_executor.adopt()[_ref(job)].alive, what="a dead pane")
    assert tmux_executor.close_finished_windows(3600.0) == []
    # tmux notes the time of death a moment after the pane dies
    closed = wait_until(lambda: tmux_executor.close_finished_windows(0.0), what="closing")
    assert closed == [job.executor_ref]
    assert tmux_executor.adopt() == {}
    tmux_executor.close_window(job)  # already gone: no error
    assert tmux_executor.poll(job).exit_code == 1


def test_close_window_closes_only_its_own_job(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob
) -> None:
    a = _launch(tmux_executor, make_tmux_job("exit 0"))
    b = _launch(tmux_executor, make_tmux_job("exit 0"))
    wait_status(tmux_executor, a)
    wait_status(tmux_executor, b)
    tmux_executor.close_window(b.evolve(executor_ref=a.executor_ref))  # wrong handle
    assert set(tmux_executor.adopt()) == {a.executor_ref, b.executor_ref}
    tmux_executor.close_window(a)
    assert set(tmux_executor.adopt()) == {b.executor_ref}


def test_close_on_success(make_tmux_job: MakeJob, tmux_exec_socket: str) -> None:
    executor = TmuxExecutor(
        session=TEST_SESSION, socket_name=tmux_exec_socket, close_on_success=True
    )
    ok = _launch(executor, make_tmux_job("exit 0"))
    bad = _launch(executor, make_tmux_job("exit 1"))
    assert wait_status(executor, ok).exit_code == 0
    wait_status(executor, bad)
    wait_until(lambda: ok.executor_ref not in executor.adopt(), what="the window to close")
    assert bad.executor_ref in executor.adopt()


def test_attach_and_switch_commands(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob, tmux_exec_socket: str
) -> None:
    job = _launch(tmux_executor, make_tmux_job("sleep 300"))
    attach = tmux_executor.attach_command(job)
    assert attach[1:] == ["-L", tmux_exec_socket, "attach-session", "-t", job.executor_ref]
    assert tmux_executor.switch_command(job)[-3:] == ["switch-client", "-t", job.executor_ref]
    tmux_dir = os.environ.get("TMUX_TMPDIR") or "/tmp"
    inside = {"TMUX": f"{tmux_dir}/tmux-{os.getuid()}/{tmux_exec_socket},123,0"}
    assert tmux_executor.inside_same_server(inside)
    assert not tmux_executor.inside_same_server({"TMUX": "/tmp/elsewhere,1,0"})
    assert not tmux_executor.inside_same_server({})
    # Detaching from the session must never destroy it (and every job in it).
    shown = subprocess.run(
        ["tmux", "-L", tmux_exec_socket, "show-options", "-t", TEST_SESSION, "destroy-unattached"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown.split() == ["destroy-unattached", "off"]
    tmux_executor.stop(job, grace=0.2)


# --------------------------------------------------------------------------- errors


def test_a_missing_venv_is_a_clear_launch_error(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob, tmp_path: Path
) -> None:
    job = _launch(tmux_executor, make_tmux_job("echo never", venv=tmp_path / "no-venv"))
    result = wait_status(tmux_executor, job)
    assert result.exit_code == 127
    assert result.launch_error is not None and "no virtual environment" in result.launch_error
    assert "no virtual environment" in job.log_file.read_text()
    assert "never" not in job.log_file.read_text()


def test_a_missing_workdir_is_a_clear_launch_error(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob, tmp_path: Path
) -> None:
    job = _launch(tmux_executor, make_tmux_job("echo never", workdir=tmp_path / "gone"))
    result = wait_status(tmux_executor, job)
    assert result.exit_code == 127
    assert result.launch_error == f"cannot enter the workdir {tmp_path / 'gone'}"


def test_bad_settings_are_refused(tmux_exec_socket: str) -> None:
    with pytest.raises(ExecutorError, match="session name"):
        TmuxExecutor(session="a.b", socket_name=tmux_exec_socket)
    with pytest.raises(ExecutorError, match="max_log_bytes"):
        TmuxExecutor(socket_name=tmux_exec_socket, max_log_bytes=10)


def test_launch_needs_an_attempt_number(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob
) -> None:
    with pytest.raises(ExecutorError, match="attempt"):
        tmux_executor.launch(make_tmux_job("true", attempts=0), ())


# --------------------------------------------------------------------------- logs


def test_a_flooding_job_cannot_fill_the_disk(make_tmux_job: MakeJob, tmux_exec_socket: str) -> None:
    limit = 1_000_000
    executor = TmuxExecutor(session=TEST_SESSION, socket_name=tmux_exec_socket, max_log_bytes=limit)
    job = _launch(executor, make_tmux_job("seq 1 700000; echo the-end"))  # ~4.8 MB
    assert wait_status(executor, job, timeout=60).exit_code == 0
    data = job.log_file.read_bytes()
    marker = marker_line(limit)
    assert len(data) <= limit + len(marker)
    head, sep, tail = data.partition(marker)
    assert sep == marker
    head_numbers = [int(n) for n in head.split()]
    assert head_numbers == list(range(1, len(head_numbers) + 1))
    tail_lines = tail.decode().splitlines()
    assert tail_lines[-1] == "the-end"
    tail_numbers = [int(n) for n in tail_lines[:-1]]
    assert tail_numbers == list(range(tail_numbers[0], 700001))
    assert len(tail) > limit // 8
    assert tail_offset(job.log_file) == len(head) + len(marker)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("train", "5-train"),
        ("a.b:c", "5-a_b_c"),
        ("a'; rm -rf ~; '", "5-a_rm_-rf"),
        ("  \n\t ", "5"),
        ("x" * 100, "5-" + "x" * 38),
        ("süß 训练", "5-süß_训练"),
    ],
)
def test_safe_window_name_examples(name: str, expected: str) -> None:
    assert safe_window_name(5, name) == expected


@given(st.integers(min_value=1, max_value=10**9), st.text())
def test_safe_window_names_are_safe_tmux_targets(job_id: int, name: str) -> None:
    result = safe_window_name(job_id, name)
    assert result.startswith(str(job_id))
    assert len(result) <= 40 or result == str(job_id)
    assert re.fullmatch(r"\d+(-[\w+-]+)?", result)
    assert not set(result) & set(".:;#'\"$` \t\n\r\x00")


@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) for a terminal")
def test_attach_command_shows_the_jobs_window(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob, tmux_exec_socket: str
) -> None:
    first = _launch(tmux_executor, make_tmux_job("sleep 300"))
    second = _launch(tmux_executor, make_tmux_job("sleep 300"))
    # script(1) gives the attaching client the terminal that CI lacks.
    client = subprocess.Popen(
        ["script", "-qc", shlex.join(tmux_executor.attach_command(second)), "/dev/null"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def client_window() -> str:
            return subprocess.run(
                ["tmux", "-L", tmux_exec_socket, "list-clients", "-F", "#{window_id}"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()

        assert wait_until(client_window, what="a client to attach") == second.executor_ref
    finally:
        client.kill()
        client.wait()
    tmux_executor.stop(first, grace=0.2)
    tmux_executor.stop(second, grace=0.2)


def test_the_server_does_not_inherit_loradecks_own_venv() -> None:
    if sys.prefix == sys.base_prefix:
        pytest.skip("not running from a virtual environment")
    env = server_environment(
        {
            "VIRTUAL_ENV": sys.prefix,
            "PATH": f"{sys.prefix}/bin:/usr/local/bin:/usr/bin",
            "TMUX": "/tmp/tmux-0/default,1,0",
            "HOME": "/root",
        }
    )
    assert env == {"PATH": "/usr/local/bin:/usr/bin", "HOME": "/root", "TERM": "xterm-256color"}


def test_arguments_that_would_end_a_tmux_command_are_refused(tmux_exec_socket: str) -> None:
    with pytest.raises(ExecutorError, match="ends in ';'"):
        TmuxServer(tmux_exec_socket).run("new-session", "-d", "-s", "x;")


def test_a_leftover_background_process_does_not_keep_the_job_running(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob
) -> None:
    # Like a trainer that starts a helper in the background and finishes. The helper
    # ignores SIGHUP, else the end of the runner (the session leader) would end it.
    job = _launch(tmux_executor, make_tmux_job("trap '' HUP; sleep 300 & echo trained"))
    result = wait_status(tmux_executor, job)
    assert result.exit_code == 0
    assert json.loads(JobFiles.of(job).exit_status.read_text())["log_status"] == -1
    assert log_text(job) == "trained\n"
    leftovers = tmux_executor.pids(job)
    assert leftovers  # the background sleep, and the tee it keeps open
    tmux_executor.stop(job, grace=0.2)  # how the engine reaps what a finished job left
    assert tmux_executor.pids(job) == []
    assert tmux_executor.poll(job).exit_code == 0


# --------------------------------------------------------------------------- launch calls


def _logging_tmux(tmp_path: Path, *, before: str = "") -> tuple[str, Path]:
    """A tmux binary that notes each call in a file, then runs the real tmux; ``before``
    is shell text run first. (tmux_bin, the file of calls)."""
    real = shutil.which("tmux")
    assert real is not None
    calls = tmp_path / "tmux-calls"
    script = tmp_path / "logging-tmux"
    script.write_text(
        "#!/bin/sh\n"
        f"printf '%s\\n' \"$3\" >> {shlex.quote(str(calls))}\n"  # after -L NAME
        f"{before}\n"
        f'exec {shlex.quote(real)} "$@"\n'
    )
    script.chmod(0o700)
    return str(script), calls


def _calls(calls: Path) -> list[str]:
    return calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.parametrize("first_stage", [True, False])
def test_one_tmux_call_opens_every_window_of_a_pass(
    make_tmux_job: MakeJob, tmux_exec_socket: str, tmp_path: Path, first_stage: bool
) -> None:
    tmux_bin, calls = _logging_tmux(tmp_path)
    executor = TmuxExecutor(
        session=TEST_SESSION,
        socket_name=tmux_exec_socket,
        tmux_bin=tmux_bin,
        first_stage=first_stage,
    )
    # The first launch finds no server: new-window fails, new-session makes it.
    first = [make_tmux_job(f"echo job {i}; exit {i}") for i in range(3)]
    refs = executor.launch_many([(job, ()) for job in first])
    assert _calls(calls) == ["new-window", "new-session"]
    # Then one call for all, a job that cannot start failing alone.
    calls.unlink()
    broken = make_tmux_job("true", attempts=0)
    second = [make_tmux_job(f"echo job {i}; exit {i}") for i in range(3, 6)]
    outcomes = executor.launch_many([(second[0], ()), (broken, ()), *((j, ()) for j in second[1:])])
    assert _calls(calls) == ["new-window"]
    assert isinstance(outcomes[1], ExecutorError)
    assert "attempt" in outcomes[1].message
    refs += [outcomes[0], outcomes[2], outcomes[3]]
    assert all(isinstance(ref, str) and ref.startswith("@") for ref in refs)
    assert len(set(refs)) == 6
    jobs = [job.evolve(executor_ref=ref) for job, ref in zip([*first, *second], refs, strict=True)]
    for i, job in enumerate(jobs):
        assert wait_status(executor, job).exit_code == i
        assert log_text(job) == f"job {i}\n"
    found = wait_until(
        lambda: (f := executor.adopt()) and not any(a.alive for a in f.values()) and f,
        what="every pane to die and stay",
    )
    assert {ref: (a.job_id, a.attempt) for ref, a in found.items()} == {
        job.executor_ref: (job.id, 1) for job in jobs
    }


def test_a_window_that_tmux_opens_after_the_launch_gave_up_runs_nothing(
    make_tmux_job: MakeJob, tmux_exec_socket: str, tmp_path: Path
) -> None:
    """tmux answers too late: the launch fails, and the window that tmux then opens
    finds its attempt.json gone and runs nothing (so a retry can never overlap it)."""
    setup = TmuxExecutor(session=TEST_SESSION, socket_name=tmux_exec_socket)
    warm = _launch(setup, make_tmux_job("exit 0"))  # the server and session exist
    wait_status(setup, warm)
    real = shutil.which("tmux")
    assert real is not None
    late = tmp_path / "late-tmux"
    late.write_text(
        "#!/bin/sh\n"
        f'( sleep 1; exec {shlex.quote(real)} "$@" ) </dev/null >/dev/null 2>&1 &\n'
        "sleep 30\n"
    )
    late.chmod(0o700)
    executor = TmuxExecutor(session=TEST_SESSION, socket_name=tmux_exec_socket, tmux_bin=str(late))
    executor.server.timeout = 0.3
    canary = tmp_path / "canary"
    job = make_tmux_job(f"touch {shlex.quote(str(canary))}; sleep 300")
    with pytest.raises(ExecutorError, match="did not answer"):
        executor.launch(job, ())
    assert not JobFiles.of(job).attempt_file.exists()
    window = wait_until(
        lambda: next((r for r, a in setup.adopt().items() if a.job_id == job.id), None),
        what="tmux to open the late window",
    )
    wait_until(lambda: not setup.adopt()[window].alive, what="its pane to end")
    assert "nothing was run" in pane_text(tmux_exec_socket, window)
    assert not canary.exists()
    assert not JobFiles.of(job).pid_file.exists()


def test_a_window_is_found_without_its_id(
    tmux_executor: TmuxExecutor, make_tmux_job: MakeJob
) -> None:
    """An engine that died between opening a window and storing its id: the window is
    found by its options, to watch, stop and close it."""
    job = make_tmux_job("echo up; sleep 300")
    ref = tmux_executor.launch(job, ())
    wait_until(lambda: "up" in log_text(job), what="the job to start")
    assert job.executor_ref is None
    assert tmux_executor.poll(job).status == AttemptStatus.RUNNING
    tmux_executor.stop(job, grace=0.2)
    assert wait_status(tmux_executor, job).signal == signal.SIGINT
    assert ref in tmux_executor.adopt()
    tmux_executor.close_window(job)
    assert tmux_executor.adopt() == {}

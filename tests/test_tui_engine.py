"""Every key action of the TUI against a real engine on ``--gpus sim:4`` with real tmux
jobs (a private tmux server per test), real files and the demo trainer."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, wait_for, write
from textual.pilot import Pilot
from textual.widgets import Input
from tui_helpers import RecordingTerminal, until

from loradeck.core.actions import cancel_job
from loradeck.core.facade import FacadeMode, LiveFacade
from loradeck.core.home import Home
from loradeck.core.lease import engine_running, holder_info
from loradeck.core.models import Job, JobState
from loradeck.core.runtime import build_engine
from loradeck.core.settings import ExecutorSettings, SchedulerSettings, Settings
from loradeck.core.store import Store
from loradeck.tui.app import LoradeckApp
from loradeck.tui.dialogs import ConfirmDialog, QuitDialog, SubmitDialog
from loradeck.tui.job_detail import JobDetail
from loradeck.tui.job_table import JobTable

pytestmark = pytest.mark.slow

FAST = Settings(
    executor=ExecutorSettings(kill_grace=1.0),
    scheduler=SchedulerSettings(check_interval=2.0),
)
SLEEPER = """
[[job]]
name = "sleeper"
command = "echo sleeping; sleep 300"
"""


@dataclass
class Deck:
    """The app on a real home with a hosted engine, and what a test needs around it."""

    app: LoradeckApp
    facade: LiveFacade
    home: Home
    terminal: RecordingTerminal
    socket: str
    folder: Path

    def batch(self, text: str) -> Path:
        return write(self.folder / f"batch-{time.monotonic_ns()}.toml", text)

    async def submit(self, text: str) -> list[int]:
        outcome = await asyncio.to_thread(self.facade.submit_batch, self.batch(text))
        return list(outcome.job_ids)

    def job(self, job_id: int) -> Job:
        return self.app.deck.jobs[job_id]

    def stored(self, job_id: int) -> Job:
        with Store(self.home.root) as store:
            return store.get(job_id)

    async def wait_state(self, pilot: Pilot[Any], job_id: int, *states: JobState) -> Job:
        job: Job = await until(
            pilot,
            lambda: (
                job_id in self.app.deck.jobs
                and self.job(job_id).state in states
                and self.job(job_id)
            ),
            f"job {job_id} to be {'/'.join(states)}",
            timeout=30,
        )
        return job

    async def select(self, pilot: Pilot[Any], job_id: int) -> None:
        table = self.app.screen.query_one(JobTable)
        await until(pilot, lambda: job_id in table._order, f"job {job_id} in the table")
        table.select_job(job_id)
        await pilot.pause()
        assert table.selected_id == job_id


def _make_deck(folder: Path, socket: str, environ: dict[str, str] | None = None) -> Deck:
    home = Home.open(folder / "home")
    facade = LiveFacade(home, FAST, gpus="sim:4", tmux_session="ld", tmux_socket=socket)
    terminal = RecordingTerminal()
    app = LoradeckApp(facade, terminal=terminal, environ=environ or {}, machine_interval=1.0)
    return Deck(app, facade, home, terminal, socket, folder)


@pytest.fixture
def deck(tmp_path: Path, tmux_socket: str) -> Iterator[Deck]:
    made = _make_deck(tmp_path, tmux_socket)
    yield made
    if not made.app.closed:
        made.facade.close()


async def _started(pilot: Pilot[Any], deck: Deck) -> None:
    await until(pilot, lambda: deck.app.deck.loaded, "the engine to start and jobs to load")
    assert deck.app.deck.status.mode == FacadeMode.HOSTING


async def test_cancel_asks_and_stops_a_running_job(deck: Deck) -> None:
    async with deck.app.run_test(size=(120, 40)) as pilot:
        await _started(pilot, deck)
        (job_id,) = await deck.submit(SLEEPER)
        await deck.wait_state(pilot, job_id, JobState.RUNNING)
        await deck.select(pilot, job_id)
        await pilot.press("c")
        assert isinstance(deck.app.screen, ConfirmDialog)
        await pilot.press("n")
        await pilot.pause()
        assert deck.stored(job_id).cancel_requested_at is None
        await pilot.press("c", "y")
        await deck.wait_state(pilot, job_id, JobState.CANCELLED)
        assert deck.stored(job_id).state == JobState.CANCELLED


async def test_priority_hold_and_release_of_a_queued_job(deck: Deck) -> None:
    async with deck.app.run_test(size=(120, 40)) as pilot:
        await _started(pilot, deck)
        first, waiting = await deck.submit(
            SLEEPER + '[[job]]\nname = "waiting"\ncommand = "true"\ndepends_on = ["sleeper"]\n'
        )
        await deck.wait_state(pilot, first, JobState.RUNNING)
        await deck.select(pilot, waiting)
        await pilot.press("plus", "plus", "minus")
        await until(pilot, lambda: deck.job(waiting).priority == 1, "priority 1 on screen")
        assert deck.stored(waiting).priority == 1
        await pilot.press("h")
        await deck.wait_state(pilot, waiting, JobState.HELD)
        assert deck.stored(waiting).reason == "held by user"
        await pilot.press("h")
        await deck.wait_state(pilot, waiting, JobState.PENDING)
        assert deck.stored(waiting).state == JobState.PENDING


async def test_retry_puts_a_failed_job_back(deck: Deck) -> None:
    async with deck.app.run_test(size=(120, 40)) as pilot:
        await _started(pilot, deck)
        marker = deck.folder / "second-try"
        (job_id,) = await deck.submit(
            f'[[job]]\nname = "flaky"\ngpus = 0\n'
            f'command = "test -f {marker} && exit 0; touch {marker}; exit 3"\n'
        )
        failed = await deck.wait_state(pilot, job_id, JobState.FAILED)
        assert failed.exit_code == 3
        await deck.select(pilot, job_id)
        await pilot.press("r")
        done = await deck.wait_state(pilot, job_id, JobState.COMPLETED)
        assert done.exit_code == 0 and done.attempts == 1


async def test_submit_shows_problems_then_submits_a_good_file(deck: Deck) -> None:
    async with deck.app.run_test(size=(120, 40)) as pilot:
        await _started(pilot, deck)
        bad = deck.batch('[[job]]\nname = "typo"\ncommand = "true"\ngpuz = 1\n')
        good = deck.batch('[[job]]\nname = "fine"\ncommand = "echo fine"\ngpus = 0\n')
        await pilot.press("s")
        dialog = deck.app.screen
        assert isinstance(dialog, SubmitDialog)
        dialog.query_one(Input).value = str(bad)
        await pilot.press("enter")
        problems = dialog.query_one("#submit-problems")
        await until(pilot, lambda: "gpuz" in str(problems.render()), "the problem shown")
        assert "unknown key" in str(problems.render())
        assert deck.app.screen is dialog
        with Store(deck.home.root) as store:
            assert store.jobs() == []
        dialog.query_one(Input).value = str(good)
        await pilot.press("enter")
        await until(pilot, lambda: deck.app.screen is not dialog, "the dialog to close")
        await until(
            pilot, lambda: any(j.name == "fine" for j in deck.app.deck.jobs.values()), "job"
        )
        (job,) = deck.app.deck.jobs.values()
        await deck.wait_state(pilot, job.id, JobState.COMPLETED)


async def test_attach_outside_tmux_hands_the_terminal_to_tmux_attach(deck: Deck) -> None:
    async with deck.app.run_test(size=(120, 40)) as pilot:
        await _started(pilot, deck)
        (job_id,) = await deck.submit(SLEEPER)
        job = await deck.wait_state(pilot, job_id, JobState.RUNNING)
        await until(pilot, lambda: deck.job(job_id).executor_ref, "the window id")
        await deck.select(pilot, job_id)
        await pilot.press("a")
        await until(pilot, lambda: deck.terminal.handed_over, "the attach command")
        (argv,) = deck.terminal.handed_over
        ref = deck.job(job_id).executor_ref
        assert argv[1:] == ["-L", deck.socket, "attach-session", "-t", ref]
        # the target is the job's real window
        shown = subprocess.run(
            ["tmux", "-L", deck.socket, "display-message", "-p", "-t", str(ref), "#{window_id}"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert shown.stdout.strip() == ref
        assert job.name == "sleeper"


async def test_attach_inside_tmux_switches_the_client(tmp_path: Path, tmux_socket: str) -> None:
    folder = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
    deck = _make_deck(tmp_path, tmux_socket, {"TMUX": f"{folder / tmux_socket},1234,0"})
    try:
        async with deck.app.run_test(size=(120, 40)) as pilot:
            await _started(pilot, deck)
            (job_id,) = await deck.submit(SLEEPER)
            await deck.wait_state(pilot, job_id, JobState.RUNNING)
            await until(pilot, lambda: deck.job(job_id).executor_ref, "the window id")
            await deck.select(pilot, job_id)
            await pilot.press("a")
            await until(pilot, lambda: deck.terminal.ran, "the switch command")
            assert deck.terminal.handed_over == []
            (argv,) = deck.terminal.ran
            ref = deck.job(job_id).executor_ref
            assert argv[1:] == ["-L", deck.socket, "switch-client", "-t", ref]
    finally:
        deck.facade.close()


async def test_theme_key_cycles_through_the_shipped_themes(deck: Deck) -> None:
    async with deck.app.run_test(size=(80, 24)) as pilot:
        await _started(pilot, deck)
        assert deck.app.theme == "loradeck-dark"
        seen = []
        for _ in range(4):
            await pilot.press("t")
            await pilot.pause()
            seen.append(deck.app.theme)
            # the theme's own state colour is what the CSS uses now
            variables = deck.app.theme_variables
            expected = deck.app.current_theme.variables["state-running"]
            assert variables["state-running"] == expected
        assert seen == [
            "loradeck-light",
            "loradeck-high-contrast",
            "loradeck-ansi",
            "loradeck-dark",
        ]


async def test_quit_with_a_queue_can_stop_scheduling(deck: Deck) -> None:
    async with deck.app.run_test(size=(120, 40)) as pilot:
        await _started(pilot, deck)
        first, waiting = await deck.submit(
            SLEEPER + '[[job]]\nname = "waiting"\ncommand = "true"\ndepends_on = ["sleeper"]\n'
        )
        await deck.wait_state(pilot, first, JobState.RUNNING)
        await deck.wait_state(pilot, waiting, JobState.PENDING)
        await pilot.press("q")
        assert isinstance(deck.app.screen, QuitDialog)
        await pilot.press("escape")
        assert not isinstance(deck.app.screen, QuitDialog) and deck.app.is_running
        await pilot.press("q", "s")
        await until(pilot, lambda: deck.app.closed, "the app to close", timeout=40)
    assert not engine_running(deck.home.engine_lock)
    assert deck.stored(first).state == JobState.RUNNING  # running jobs continue
    assert deck.stored(waiting).state == JobState.PENDING
    assert deck.app.exit_note is not None and "scheduling stopped" in deck.app.exit_note


async def test_quit_with_a_queue_can_keep_the_engine_running_in_tmux(deck: Deck) -> None:
    async with deck.app.run_test(size=(120, 40)) as pilot:
        await _started(pilot, deck)
        first, waiting = await deck.submit(
            SLEEPER
            + '[[job]]\nname = "after"\ncommand = "echo after"\ngpus = 0\n'
            + 'depends_on = ["afterany:sleeper"]\n'
        )
        await deck.wait_state(pilot, first, JobState.RUNNING)
        await pilot.press("q", "k")
        await until(pilot, lambda: deck.app.closed, "the app to close", timeout=40)
    info = holder_info(deck.home.engine_lock)
    assert engine_running(deck.home.engine_lock)
    assert info is not None and info["pid"] != os.getpid()
    # the headless engine schedules: cancel the sleeper like `loradeck cancel` would, and
    # it stops it and starts the job that waited for it
    with Store(deck.home.root) as store:
        store.update(first, lambda job: cancel_job(job, time.time()))
        wait_for(
            lambda: store.get(waiting).state == JobState.COMPLETED, 40, "the waiting job to run"
        )
    assert deck.app.exit_note is not None and "handed to tmux window" in deck.app.exit_note


async def test_quit_without_a_queue_quits_at_once(deck: Deck) -> None:
    async with deck.app.run_test(size=(120, 40)) as pilot:
        await _started(pilot, deck)
        await pilot.press("q")
        await until(pilot, lambda: deck.app.closed, "the app to close", timeout=40)
    assert not engine_running(deck.home.engine_lock)


async def test_follows_an_engine_that_runs_elsewhere(tmp_path: Path, tmux_socket: str) -> None:
    deck = _make_deck(tmp_path, tmux_socket)
    other = build_engine(deck.home, FAST, gpus="sim:4", tmux_session="ld", tmux_socket=tmux_socket)
    other.start()
    try:
        async with deck.app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: deck.app.deck.loaded, "jobs to load")
            assert deck.app.deck.status.mode == FacadeMode.FOLLOWING
            assert f"pid {os.getpid()}" in deck.app.deck.status.text  # the holder is named
            (job_id,) = await deck.submit(SLEEPER)
            other.wake()
            await deck.wait_state(pilot, job_id, JobState.RUNNING)
            await deck.select(pilot, job_id)
            await pilot.press("c", "y")
            await deck.wait_state(pilot, job_id, JobState.CANCELLED)
            events = deck.app.deck.events
            await until(pilot, lambda: any(e.kind == "job_cancelled" for e in events), "event")
            await pilot.press("q")
            await until(pilot, lambda: deck.app.closed, "the app to close", timeout=40)
        assert engine_running(deck.home.engine_lock)  # the other engine still runs the queue
    finally:
        other.stop()


async def test_demo_trainer_job_runs_and_its_log_shows(deck: Deck) -> None:
    demo = REPO / "configs" / "demo"
    async with deck.app.run_test(size=(120, 40)) as pilot:
        await _started(pilot, deck)
        (job_id,) = await deck.submit(
            f"""
            [[sweep]]
            name = "toy-r{{network_dim}}"
            command = "{sys.executable} toy_lora.py --config_file {{config}}"
            config = "{demo / "toy.toml"}"
            workdir = "{demo}"
            grid = {{ network_dim = [4], max_train_epochs = [2], dataset_size = [320] }}
            """
        )
        await deck.wait_state(pilot, job_id, JobState.RUNNING)
        await deck.select(pilot, job_id)
        done = await until(
            pilot,
            lambda: deck.job(job_id).state.is_terminal and deck.job(job_id),
            "the toy trainer to finish",
            timeout=120,
        )
        assert done.state == JobState.COMPLETED, done.reason
        log = deck.app.screen.query_one(JobDetail).query_one("#detail-log")
        await until(pilot, lambda: "model saved." in str(log.render()), "the log tail", timeout=10)
        assert "steps: 100%" in str(log.render())  # the last state of a \r progress bar


async def test_evaluate_queues_an_evaluation_job(tmp_path: Path, tmux_socket: str) -> None:
    # The evaluation asks for more GPUs than sim:4 has, so it stays queued (it would
    # otherwise start scoring at once); what matters here is what `e` queued.
    deck = _make_deck(tmp_path, tmux_socket)
    deck.facade.settings = FAST.model_copy(
        update={"evaluation": FAST.evaluation.model_copy(update={"gpus": 8})}
    )
    try:
        async with deck.app.run_test(size=(120, 40)) as pilot:
            await _started(pilot, deck)
            (job_id,) = await deck.submit('[[job]]\nname = "trained"\ncommand = "true"\n')
            await deck.wait_state(pilot, job_id, JobState.COMPLETED)
            await deck.select(pilot, job_id)
            await pilot.press("e")
            evaluation = await until(
                pilot,
                lambda: next((j for j in deck.app.deck.jobs.values() if j.id != job_id), None),
                "the evaluation job",
            )
            assert "evaluation" in evaluation.spec.tags
            assert evaluation.name == "eval trained"
            assert f"--job {job_id}" in evaluation.command
            assert evaluation.deps == ()  # the trained job is over: no need to wait
            assert evaluation.state in (JobState.PENDING, JobState.FAILED, JobState.CANCELLED)
    finally:
        deck.facade.close()

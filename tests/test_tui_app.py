"""The TUI on the fixed scene (no engine): navigation, filters, live updates, help, palette."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tui_helpers import settle, until

from loradeck.core import events as ev
from loradeck.core.models import JobState
from loradeck.tui.app import LoradeckApp
from loradeck.tui.dialogs import ConfirmDialog, SubmitDialog
from loradeck.tui.help_screen import HelpScreen
from loradeck.tui.job_detail import JobDetail
from loradeck.tui.job_screen import JobScreen
from loradeck.tui.job_table import JobTable
from loradeck.tui.scene import SceneFacade, scene_app


def _table(app: LoradeckApp) -> JobTable:
    return app.screen.query_one(JobTable)


def _row_text(app: LoradeckApp, job_id: int) -> tuple[str, ...]:
    return _table(app).row_text(job_id)


async def test_keys_move_between_screens() -> None:
    app = scene_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.current_mode == "jobs"
        for key, mode in (("2", "gpus"), ("3", "results"), ("4", "events"), ("1", "jobs")):
            await pilot.press(key)
            assert app.current_mode == mode
        await pilot.press("tab")
        assert app.current_mode == "gpus"
        await pilot.press("shift+tab", "shift+tab")
        assert app.current_mode == "events"


async def test_cursor_keys_and_enter_open_the_job() -> None:
    app = scene_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = _table(app)
        assert table.selected_id == 2  # the first running job is selected at start
        await pilot.press("j", "j")
        assert table.selected_id == 4
        await pilot.press("k")
        assert table.selected_id == 3
        await pilot.press("down")
        assert table.selected_id == 4
        await pilot.press("enter")
        assert isinstance(app.screen, JobScreen) and app.screen.job_id == 4
        await settle(pilot)
        spec = str(app.screen.query_one("#detail-spec").render())
        assert "command: accelerate launch" in spec
        await pilot.press("escape")
        assert not isinstance(app.screen, JobScreen)
        assert _table(app).selected_id == 4


async def test_text_and_state_filters_keep_the_cursor_on_its_job() -> None:
    app = scene_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = _table(app)
        table.select_job(3)
        await pilot.press("slash", *"r32")
        await pilot.pause()
        assert table._order == [3, 4]
        assert table.selected_id == 3
        await pilot.press("escape")
        assert len(table._order) == 11 and table.selected_id == 3
        await pilot.press("f")  # active
        assert set(table._order) == {2, 3, 4, 5, 6, 7, 9, 11}
        await pilot.press("f", "f")  # running, then queued
        assert table._order == [5, 6, 7, 11]
        await pilot.press("f")  # held
        assert table._order == [9]


async def test_progress_events_update_rows_in_place() -> None:
    facade = SceneFacade()
    app = LoradeckApp(facade, machine_interval=3600.0, environ={})
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = _table(app)
        table.select_job(3)
        before = table.cursor
        for step in range(981, 1081):
            facade.bus.publish(
                ev.JobProgress(
                    job_id=3, name="hero-r32-lr1e-4", step=step, total_steps=2000, loss=0.05
                )
            )
        await until(pilot, lambda: _row_text(app, 3)[5] == "1080/2000", "the last progress")
        assert _row_text(app, 3)[6] == "0.05"
        assert table.cursor == before and table.selected_id == 3


async def test_queue_change_from_another_process_shows_up() -> None:
    facade = SceneFacade()
    app = LoradeckApp(facade, machine_interval=3600.0, environ={})
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        job = facade.job(5)
        facade._jobs[5] = job.transition(JobState.RUNNING, gpu_ids=(1,), attempts=1)
        facade.bus.publish(ev.QueueChanged())
        await until(pilot, lambda: _row_text(app, 5)[2] == "RUNNING", "job 5 running")


async def test_help_lists_every_job_key() -> None:
    app = scene_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        described = {description for _key, description in app.screen.keys}
        for description in ("Attach", "Cancel", "Pri+", "Pri-", "Hold", "Retry", "Eval"):
            assert description in described
        for description in ("Submit", "Theme", "Quit", "Filter", "Open"):
            assert description in described
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_command_palette_offers_the_job_actions() -> None:
    app = scene_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        titles = {command.title for command in app.get_system_commands(app.screen)}
        for title in ("Cancel job", "Attach to job", "Submit batch file", "Cycle theme"):
            assert title in titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "CommandPalette"


async def test_cancel_needs_a_yes() -> None:
    app = scene_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        _table(app).select_job(5)
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("n")
        await pilot.pause()
        assert app.facade.job(5).state == JobState.PENDING
        await pilot.press("c", "y")
        await until(pilot, lambda: app.deck.jobs[5].state == JobState.CANCELLED, "cancelled")


async def test_submit_dialog_shows_the_problem_in_place(tmp_path: Path) -> None:
    app = scene_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("s")
        assert isinstance(app.screen, SubmitDialog)
        await pilot.press(*str(tmp_path / "missing.toml"), "enter")
        problems = app.screen.query_one("#submit-problems")
        await until(pilot, lambda: "no such batch file" in str(problems.render()), "problem")
        assert isinstance(app.screen, SubmitDialog)
        await pilot.press("escape")
        assert not isinstance(app.screen, SubmitDialog)


async def test_detail_shows_why_a_job_waits() -> None:
    app = scene_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        _table(app).select_job(7)
        await pilot.pause()
        facts = str(app.screen.query_one(JobDetail).query_one("#detail-facts").render())
        assert "waiting: dependency: waits for 5 jobs" in facts
        _table(app).select_job(8)
        await pilot.pause()
        facts = str(app.screen.query_one(JobDetail).query_one("#detail-facts").render())
        assert "failed: CUDA out of memory" in facts


def test_scene_jobs_cover_every_state() -> None:
    states = {job.state for job in SceneFacade().jobs()}
    assert states == set(JobState) - {JobState.TIMEOUT}
    assert dataclasses.is_dataclass(ev.JobProgress)


async def test_engine_events_after_the_app_closed_are_ignored() -> None:
    # The engine's threads may deliver an event while the app tears its screens down.
    app = scene_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
    app.tell("events")
    app.tell("jobs", (1,))

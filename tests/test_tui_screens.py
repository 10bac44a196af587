"""Screens are built once and kept: built unseen after start, brought up to date when
shown, footers not rebuilt for the same keys; the GPU screen in Slurm mode; the theme to
start with (LORADECK_THEME over ``[tui] theme``)."""

from __future__ import annotations

from textual.widgets._footer import FooterKey
from tui_helpers import settle, until

from loradeck.core import events as ev
from loradeck.core.models import JobState
from loradeck.tui.app import MAIN_SCREENS, LoradeckApp
from loradeck.tui.base import DeckScreen
from loradeck.tui.gpus_screen import GpuCard, GpusScreen, NodeCard
from loradeck.tui.job_table import JobTable
from loradeck.tui.jobs_screen import JobsScreen
from loradeck.tui.scene import SceneFacade, scene_app
from loradeck.tui.themes import DEFAULT_THEME, SETTING_SOURCE, THEME_ENV, starting_theme


def _screen(app: LoradeckApp, kind: type[DeckScreen]) -> DeckScreen:
    (found,) = [screen for screen in app.deck_screens if type(screen) is kind]
    return found


async def test_every_main_screen_is_built_unseen_after_start() -> None:
    app = scene_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.current_mode == "jobs"
        assert app.navigator.built == set(MAIN_SCREENS)
        assert {type(s) for s in app.deck_screens} == set(MAIN_SCREENS.values())
        gpus = _screen(app, GpusScreen)
        await until(pilot, lambda: len(gpus.query(GpuCard)) == 4, "the GPU panels, built hidden")
        assert isinstance(app.focused, JobTable)  # the jobs screen kept its focus
        await pilot.press("2")
        assert app.screen is gpus


async def test_a_screen_hidden_during_a_change_shows_it_when_shown_again() -> None:
    facade = SceneFacade()
    app = LoradeckApp(facade, machine_interval=3600.0, environ={})
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = _screen(app, JobsScreen).query_one(JobTable)
        await pilot.press("2")
        facade._jobs[5] = facade.job(5).transition(JobState.RUNNING, gpu_ids=(1,), attempts=1)
        facade.bus.publish(ev.QueueChanged())
        await until(pilot, lambda: app.deck.jobs[5].state == JobState.RUNNING, "job 5 loaded")
        assert table.row_text(5)[2] == "QUEUED"  # hidden: noted, not drawn
        await pilot.press("1")
        await until(pilot, lambda: table.row_text(5)[2] == "RUNNING", "the row caught up")


async def test_the_footer_is_rebuilt_only_when_its_keys_change() -> None:
    app = scene_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        footer_keys = list(app.screen.query(FooterKey))
        assert "Cancel" in {key.description for key in footer_keys}
        await pilot.press("2", "1")
        await settle(pilot)
        assert list(app.screen.query(FooterKey)) == footer_keys  # the same widgets
        await pilot.press("slash")  # the filter has the focus: other keys
        await settle(pilot)
        assert list(app.screen.query(FooterKey)) != footer_keys


async def test_the_gpu_screen_shows_the_nodes_of_a_slurm_cluster() -> None:
    app = scene_app(slurm=True)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        cards = list(app.screen.query(NodeCard))
        assert len(cards) == 3 and not app.screen.query(GpuCard)
        titles = [str(card.query_one(".card-title").render()) for card in cards]
        assert titles[0].startswith("gpu01 · mixed · partition gpu")
        assert [card.has_class("-hot") for card in cards] == [False, False, True]
        assert cards[1].has_class("-warm")  # all its GPUs given out
        summary = str(app.screen.query_one("#gpus-cluster").render())
        assert summary == "Slurm partition gpu: 3 nodes, 7/12 GPUs given out (sinfo)"
        jobs = str(cards[0].query_one(".card-jobs").render())
        assert "#2 hero-r16-lr5e-5" in jobs
        assert "ECC errors" in str(cards[2].query_one(".card-jobs").render())
        # a minute of history read every fifth second, and the reading at start
        assert len(app.deck.node_rings["gpu01"].gpus) == 13


def test_the_theme_comes_from_the_environment_then_the_setting() -> None:
    assert starting_theme("loradeck-light", {THEME_ENV: "loradeck-ansi"}) == (
        "loradeck-ansi",
        THEME_ENV,
    )
    assert starting_theme("loradeck-light", {THEME_ENV: "  "}) == (
        "loradeck-light",
        SETTING_SOURCE,
    )
    assert starting_theme(None, {}) == (None, "")


async def test_a_theme_set_in_the_settings_is_used() -> None:
    app = LoradeckApp(
        SceneFacade(), theme="loradeck-light", theme_source=SETTING_SOURCE, environ={}
    )
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.theme == "loradeck-light"
        assert not [n for n in app._notifications if n.title == "themes"]


async def test_an_unknown_theme_name_is_named_once_with_where_it_came_from() -> None:
    app = LoradeckApp(SceneFacade(), theme="solarised", theme_source=SETTING_SOURCE, environ={})
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.theme == DEFAULT_THEME
        (note,) = [n for n in app._notifications if n.title == "themes"]
        assert "'solarised'" in note.message and SETTING_SOURCE in note.message
        assert "does not exist" in note.message and DEFAULT_THEME in note.message

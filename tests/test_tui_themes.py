"""Theme files: shipped ones load, broken ones are named once and fall back."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tui_helpers import settle

from loradeck.tui.scene import scene_app
from loradeck.tui.themes import (
    APP_VARIABLES,
    DEFAULT_THEME,
    SHIPPED_ORDER,
    load_themes,
    next_theme,
    theme_from_text,
    user_theme_dir,
)

GOOD = 'name = "mine"\nprimary = "#336699"\n[variables]\nstate-running = "#00ff00"\n'


def test_shipped_themes_load_with_every_app_variable(tmp_path: Path) -> None:
    catalog = load_themes(tmp_path)
    assert catalog.problems == ()
    assert catalog.names == SHIPPED_ORDER
    for theme in catalog.themes:
        assert set(APP_VARIABLES) <= set(theme.variables), theme.name
        theme.to_color_system().generate()


def test_a_user_theme_is_added_and_may_replace_a_shipped_one(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(GOOD)
    (tmp_path / "dark.toml").write_text(f'name = "{DEFAULT_THEME}"\nprimary = "#ff0000"\n')
    catalog = load_themes(tmp_path)
    assert catalog.problems == ()
    assert catalog.names[-1] == "mine"
    assert catalog.themes[0].name == DEFAULT_THEME and catalog.themes[0].primary == "#ff0000"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('primary = "#zzzzzz"\n', "bad colour"),
        ('primary = "#336699"\nbackground = "not-a-colour"\n', "bad colour"),
        ('primary = "#336699"\nprimery = "#336699"\n', "unknown key"),
        ('name = "x"\n', "primary: required key is missing"),
        ('primary = "#336699"\ndark = "yes please"\n', "dark"),
        ('primary = "#336699"\n[variables]\nstate-failed = "reddish"\n', "variables.state-failed"),
        ("primary = \n", "not valid TOML"),
    ],
)
def test_a_broken_theme_is_skipped_and_named(tmp_path: Path, text: str, words: str) -> None:
    (tmp_path / "broken.toml").write_text(text)
    catalog = load_themes(tmp_path)
    assert "broken" not in catalog.names
    (problem,) = catalog.problems
    assert problem.path == str(tmp_path / "broken.toml")
    assert words in problem.message
    note = catalog.notification()
    assert note is not None and str(tmp_path / "broken.toml") in note
    picked, why = catalog.pick("broken")
    assert picked == DEFAULT_THEME and why is not None and "broken" in why


def test_an_unknown_theme_name_falls_back(tmp_path: Path) -> None:
    picked, why = load_themes(tmp_path).pick("no-such-theme")
    assert picked == DEFAULT_THEME and why is not None and "does not exist" in why


def test_next_theme_wraps() -> None:
    assert next_theme(["a", "b"], "b") == "a"
    assert next_theme(["a", "b"], "z") == "a"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_is_a_theme_or_a_clear_error(text: str) -> None:
    message = None
    try:
        theme = theme_from_text(text, default_name="fuzz")
    except ValueError as err:
        message = str(err)
    else:
        theme.to_color_system().generate()
    assert message is None or message.strip()


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["primary", "background", "accent", "dark", "text_alpha", "name"]),
        st.one_of(st.text(max_size=12), st.booleans(), st.floats(allow_nan=True)),
    )
)
def test_any_table_is_a_theme_or_a_clear_error(table: dict[str, object]) -> None:
    import tomlkit

    try:
        text = tomlkit.dumps(table)
    except Exception:  # a value TOML cannot hold (NaN is fine, surrogates are not)
        return
    message = None
    try:
        theme_from_text(text, default_name="fuzz").to_color_system().generate()
    except ValueError as err:
        message = str(err)
    assert message is None or message.strip()


async def test_the_app_names_a_broken_user_theme_once_and_starts() -> None:
    folder = user_theme_dir()
    folder.mkdir(parents=True)
    (folder / "broken.toml").write_text('primary = "#zzzzzz"\n')
    (folder / "mine.toml").write_text(GOOD)
    app = scene_app(theme="broken")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        notes = [n for n in app._notifications if n.title == "themes"]
        assert len(notes) == 1
        assert str(folder / "broken.toml") in notes[0].message
        assert app.theme == DEFAULT_THEME
        assert "mine" in app.available_themes

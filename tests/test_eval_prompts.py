"""Prompt files: kohya .txt options, .toml and .json lists, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loradeck.core.evaluation.errors import PromptFileError
from loradeck.core.evaluation.prompts import (
    Prompt,
    parse_prompt_line,
    parse_prompt_text,
    prompts_from_setting,
    read_prompt_file,
    write_prompt_file,
)

REPO = Path(__file__).resolve().parent.parent


def test_kohya_line_options() -> None:
    prompt = parse_prompt_line(
        "a red circle, best quality --n blurry, lowres --w 1024 --h 768 --d 42 --l 7.5 --s 28 "
        "--ss euler_a --cn ignored.png"
    )
    assert prompt == Prompt(
        text="a red circle, best quality",
        negative="blurry, lowres",
        seed=42,
        width=1024,
        height=768,
        scale=7.5,
        steps=28,
        sampler="euler_a",
    )


def test_txt_skips_comments_and_names_the_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("# header\n\nfirst --d 1\nsecond --w wide\n", encoding="utf-8")
    with pytest.raises(PromptFileError, match=r"p\.txt:4: --w 'wide' is not a whole number"):
        read_prompt_file(path)


def test_demo_prompt_file_parses() -> None:
    prompts = read_prompt_file(REPO / "configs" / "demo" / "prompts.txt")
    assert len(prompts) == 4
    assert prompts[0].seed == 42 and prompts[0].width == 64 and prompts[3].scale == 7.5


def test_kohya_toml(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        "[prompt]\nnegative_prompt = 'bad'\nwidth = 512\nheight = 512\nscale = 7\n"
        "sample_steps = 20\n\n[[prompt.subset]]\nprompt = 'one'\n\n"
        "[[prompt.subset]]\nprompt = 'two'\nseed = 3\nwidth = 768\n",
        encoding="utf-8",
    )
    one, two = read_prompt_file(path)
    assert (one.text, one.negative, one.width, one.scale, one.steps) == ("one", "bad", 512, 7.0, 20)
    assert (two.text, two.seed, two.width) == ("two", 3, 768)


def test_json_objects_strings_and_onetrainer_disabled(tmp_path: Path) -> None:
    path = tmp_path / "samples.json"
    path.write_text(
        '[{"prompt": "a dog", "negative_prompt": "", "seed": 1, "enabled": false},'
        ' "a cat --d 5", {"prompt": "a cow", "cfg_scale": 4.5}]',
        encoding="utf-8",
    )
    dog, cat, cow = read_prompt_file(path)
    assert not dog.enabled and dog.seed == 1
    assert cat.text == "a cat" and cat.seed == 5
    assert cow.scale == 4.5


@pytest.mark.parametrize(
    ("suffix", "text", "message"),
    [
        (".json", "{not json", "not valid JSON"),
        (".json", '[{"seed": 1}]', "no prompt text"),
        (".json", '[{"prompt": "x", "seed": "one"}]', "must be a whole number"),
        (".toml", "x = ", "not valid TOML"),
        (".toml", "[other]\n", r"\[prompt\] table"),
        (".txt", "# only comments\n", "no prompts in the file"),
        (".txt", "--w 5\n", "no prompt text"),
    ],
)
def test_bad_files_say_what_and_where(tmp_path: Path, suffix: str, text: str, message: str) -> None:
    path = tmp_path / f"prompts{suffix}"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PromptFileError, match=message) as info:
        read_prompt_file(path)
    assert str(path) in info.value.message


def test_missing_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(PromptFileError, match="no such prompt file"):
        read_prompt_file(tmp_path / "none.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(PromptFileError, match="not UTF-8"):
        read_prompt_file(tmp_path / "bin.txt")


def test_setting_list_and_roundtrip(tmp_path: Path) -> None:
    prompts = prompts_from_setting(["a fox --d 7 --n ugly", "a hen"])
    assert prompts[0] == Prompt(text="a fox", negative="ugly", seed=7)
    written = write_prompt_file(prompts, tmp_path / "out.txt")
    assert read_prompt_file(written) == prompts
    assert prompts_from_setting(None) == []


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_random_text_parses_or_fails_clearly(text: str) -> None:
    message = ""
    try:
        prompts = parse_prompt_text(text, source="fuzz.txt")
    except PromptFileError as err:
        message, prompts = err.message, []
    assert not message or message.startswith("fuzz.txt:")
    assert all(p.text and "\n" not in p.text for p in prompts)

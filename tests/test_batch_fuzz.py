"""Random input never crashes the batch loader: it loads, or it says clearly why not."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomlkit
import yaml
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from loradeck.core.batch import BatchPlan, load_batch
from loradeck.core.errors import ValidationError
from loradeck.core.models import JobSpec
from loradeck.core.settings import Settings

SETTINGS = Settings()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Keys loradeck knows, so that random documents reach deep into validation, plus noise.
KNOWN_KEYS = [*JobSpec.model_fields, "grid", "batch", "defaults", "job", "sweep"]
KEYS = st.sampled_from(KNOWN_KEYS) | st.text(max_size=6)
COMMANDS = st.sampled_from(
    ["true", "echo {a}", "run {config}", "awk '{print $1}' ${HOME}", "x {name} {job_id}"]
)


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    # One folder for all examples: hypothesis runs many examples per test function.
    with tempfile.TemporaryDirectory() as name:
        path = Path(name)
        (path / "c.toml").write_text("# a config\n[t]\na = 1\nlr = 0.1\n", encoding="utf-8")
        (path / "c.yaml").write_text("a: 1\nnested: {lr: 0.1}\n", encoding="utf-8")
        yield path


def scalars(*, with_none: bool) -> st.SearchStrategy[Any]:
    base = (
        st.booleans()
        | st.integers(min_value=-(2**63), max_value=2**63 - 1)
        | st.floats()
        | st.text(max_size=12)
        | COMMANDS
        | st.sampled_from(["c.toml", "c.yaml", "a", "kohya", "afterany:a", "1h"])
    )
    return base | st.none() if with_none else base


def values(*, with_none: bool) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars(with_none=with_none),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
        max_leaves=8,
    )


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` three times in four, so that many documents pass validation."""
    return st.sampled_from([True, True, True, False]).flatmap(lambda ok: good if ok else bad)


def documents(*, with_none: bool) -> st.SearchStrategy[dict[str, Any]]:
    any_value = values(with_none=with_none)
    scalar = scalars(with_none=with_none)
    optional = {
        "trainer": st.sampled_from(["kohya", "ai-toolkit", "nope"]),
        "config": st.sampled_from(["c.toml", "c.yaml", "missing.toml"]),
        "depends_on": st.lists(st.sampled_from(["a", "b", "s{a}", "s", "1", "afterany:b"])),
        "gpus": st.integers(min_value=-1, max_value=3),
        "env": st.dictionaries(st.sampled_from(["A", "B", "1x"]), st.text(max_size=4)),
        "timeout": st.sampled_from(["1h", "soon", 0, 30]),
        "output_dir": st.sampled_from(["out", "~/x", "/abs"]),
        "retries": st.integers(min_value=0, max_value=3),
    }
    names = mostly(st.sampled_from(["a", "b", "s", "s{a}"]), st.text(max_size=8))
    grid = st.dictionaries(
        mostly(st.sampled_from(["a", "lr", "t.a"]), st.text(max_size=4)),
        mostly(st.lists(scalar, min_size=1, max_size=3), any_value),
        min_size=1,
        max_size=3,
    )
    junk = st.dictionaries(KEYS, any_value, max_size=5)
    job = mostly(
        st.fixed_dictionaries({"name": names, "command": COMMANDS}, optional=optional), junk
    )
    sweep = (
        st.fixed_dictionaries(
            {"name": names, "grid": grid}, optional={**optional, "command": COMMANDS}
        )
        | junk
    )
    defaults = mostly(
        st.fixed_dictionaries({}, optional={k: optional[k] for k in ("gpus", "retries")}),
        junk,
    )
    return mostly(
        st.fixed_dictionaries(
            {},
            optional={
                "batch": mostly(
                    st.fixed_dictionaries({}, optional={"name": st.text(max_size=5)}), junk
                ),
                "defaults": defaults,
                "job": mostly(st.lists(job, max_size=3), any_value),
                "sweep": st.lists(sweep, max_size=2),
            },
        ),
        st.dictionaries(KEYS, any_value, max_size=4),
    )


def check_loads_or_explains(path: Path) -> None:
    try:
        plan: BatchPlan | None = load_batch(path, SETTINGS)
        problems: list[str] = []
    except ValidationError as err:
        plan, problems = None, err.problems
    if plan is None:
        assert problems
        for line in problems:
            assert line.startswith(f"{path}: "), line
            assert "\n" not in line, line
        return
    names = [job.spec.name for job in plan.jobs]
    assert len(names) == len(set(names))
    assert [job.index for job in plan.jobs] == list(range(len(plan.jobs)))
    assert all(job.spec.workdir is not None and job.spec.workdir.is_absolute() for job in plan.jobs)


@FUZZ
@given(data=st.binary(max_size=400))
@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_arbitrary_bytes_never_crash_the_loader(folder: Path, suffix: str, data: bytes) -> None:
    path = folder / f"bytes{suffix}"
    path.write_bytes(data)
    check_loads_or_explains(path)


@FUZZ
@given(
    text=st.text(alphabet=st.sampled_from(list("[]{}=\"',.:-#\n abcjobsweep0123")), max_size=200)
)
@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_arbitrary_syntax_never_crashes_the_loader(folder: Path, suffix: str, text: str) -> None:
    path = folder / f"text{suffix}"
    path.write_text(text, encoding="utf-8")
    check_loads_or_explains(path)


@FUZZ
@given(document=documents(with_none=False))
def test_arbitrary_toml_documents_load_or_explain(folder: Path, document: dict[str, Any]) -> None:
    try:
        text = tomlkit.dumps(document)
    except (tomlkit.exceptions.TOMLKitError, ValueError, TypeError):
        reject()  # not expressible in TOML; the YAML test covers the shape
    path = folder / "doc.toml"
    path.write_text(text, encoding="utf-8")
    check_loads_or_explains(path)


@FUZZ
@given(document=documents(with_none=True))
def test_arbitrary_yaml_documents_load_or_explain(folder: Path, document: dict[str, Any]) -> None:
    path = folder / "doc.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    check_loads_or_explains(path)


@FUZZ
@given(
    grid=st.dictionaries(
        st.sampled_from(["a", "lr", "t.a", "nested.lr", "new.key"]),
        st.lists(
            st.integers(min_value=-(2**63), max_value=2**63 - 1)
            | st.floats(allow_nan=False)
            | st.booleans()
            | st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=8),
            min_size=1,
            max_size=3,
        ),
        min_size=1,
        max_size=3,
    ),
    config=st.sampled_from(["c.toml", "c.yaml"]),
)
def test_valid_sweeps_expand_to_every_combination(
    folder: Path, grid: dict[str, list[Any]], config: str
) -> None:
    path = folder / "sweep.toml"
    path.write_text(
        tomlkit.dumps(
            {"sweep": [{"name": "s", "command": "run {config}", "config": config, "grid": grid}]}
        ),
        encoding="utf-8",
    )
    try:
        plan = load_batch(path, SETTINGS)
    except ValidationError as err:
        problems = err.problems
    else:
        problems = []
    if problems:
        # Only duplicate names may stop a valid grid: equal values like 1 and 1.0 or True.
        assert all("duplicate job name" in line for line in problems), problems
        return
    assert len(plan.jobs) == math.prod(len(v) for v in grid.values())
    for job in plan.jobs:
        assert set(job.grid_values) == set(grid)

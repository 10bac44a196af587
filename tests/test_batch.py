"""Batch files (core/batch.py) and per-job config copies (core/configcopy.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
import tomlkit
import yaml

from loradeck.core.batch import (
    BatchPlan,
    check_dependencies,
    fill_command,
    format_value,
    load_batch,
    parse_batch_text,
    plan_single,
)
from loradeck.core.configcopy import (
    read_config_value,
    update_config_copy,
    write_config_copy,
)
from loradeck.core.errors import ValidationError
from loradeck.core.models import DependencyCondition, DependencyRef
from loradeck.core.settings import Settings, TrainerPreset

FIXTURES = Path(__file__).parent / "fixtures" / "batches"
SETTINGS = Settings()


@pytest.fixture
def batch_dir(tmp_path: Path) -> Path:
    """A copy of the fixture folder (batch files and trainer configs) to write into."""
    target = tmp_path / "batches"
    shutil.copytree(FIXTURES, target)
    return target


def write(folder: Path, text: str, name: str = "batch.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, settings: Settings = SETTINGS) -> list[str]:
    with pytest.raises(ValidationError) as info:
        load_batch(path, settings)
    assert info.value.exit_code == 2
    assert info.value.message == "\n".join(info.value.problems)
    return info.value.problems


def only_problem(path: Path) -> str:
    found = problems_of(path)
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------- the example


def test_example_batch_expands_in_file_order(batch_dir: Path) -> None:
    path = batch_dir / "batch.toml"
    plan = load_batch(path, SETTINGS)
    assert plan.path == path
    assert plan.name == "hero"
    assert plan.digest == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [j.spec.name for j in plan.jobs] == [
        "hero-v1",
        "hero-merge",
        "hero-r16-lr0.0001",
        "hero-r16-lr5e-05",
        "hero-r32-lr0.0001",
        "hero-r32-lr5e-05",
    ]
    assert [j.index for j in plan.jobs] == list(range(6))
    v1, merge, first, *_ = plan.jobs
    # defaults apply unless a job overrides them
    assert (v1.spec.gpus, v1.spec.vram_gb, v1.spec.retries, v1.spec.priority) == (1, 16, 2, 10)
    assert merge.spec.gpus == 0
    assert merge.dep_names == (DependencyRef(job="hero-v1"),)
    assert merge.source == 'job[1] "hero-merge"'
    assert v1.command_template == v1.spec.command
    assert v1.grid_values == {}
    # the sweep's jobs get the kohya preset, their grid values and an absolute config
    assert first.source == (
        'sweep[0] "hero-r{network_dim}-lr{learning_rate}" (network_dim=16, learning_rate=0.0001)'
    )
    assert first.grid_values == {"network_dim": 16, "learning_rate": 1e-4}
    assert first.command_template == "accelerate launch train_network.py --config_file {config}"
    assert first.spec.config == batch_dir / "configs" / "hero.toml"
    assert first.spec.parser == "kohya"
    assert first.spec.retries == 2
    assert all(j.spec.workdir == batch_dir for j in plan.jobs)


def test_yaml_batch_is_equivalent_to_toml(batch_dir: Path) -> None:
    from_toml = load_batch(batch_dir / "batch.toml", SETTINGS)
    from_yaml = load_batch(batch_dir / "batch.yaml", SETTINGS)
    assert from_yaml.name == from_toml.name
    assert [(j.spec, j.source, j.grid_values, j.command_template) for j in from_yaml.jobs] == [
        (j.spec, j.source, j.grid_values, j.command_template) for j in from_toml.jobs
    ]
    # `1e-4` is a number in a YAML batch, not the string PyYAML's YAML 1.1 rules make it
    plan = parse_batch_text(
        'sweep:\n  - name: "s"\n    command: "echo {lr}"\n    grid: {lr: [1e-4]}\n',
        fmt="yaml",
        base_dir=batch_dir,
        settings=SETTINGS,
        source="b.yaml",
    )
    assert plan.jobs[0].grid_values == {"lr": 1e-4}


def test_planned_specs_round_trip_through_a_batch_file(batch_dir: Path, tmp_path: Path) -> None:
    plan = load_batch(batch_dir / "batch.toml", SETTINGS)
    doc = tomlkit.document()
    tables = tomlkit.aot()
    for job in plan.jobs:
        tables.append(tomlkit.item(job.spec.model_dump(mode="json", exclude_defaults=True)))
    doc["job"] = tables
    again = load_batch(write(tmp_path, tomlkit.dumps(doc), "again.toml"), SETTINGS)
    assert [j.spec for j in again.jobs] == [j.spec for j in plan.jobs]
    assert [j.command_template for j in again.jobs] == [j.command_template for j in plan.jobs]


def test_parse_batch_text_names_its_source(tmp_path: Path) -> None:
    plan = parse_batch_text(
        '[[job]]\nname = "a"\ncommand = "true"\nvenv = "env"\n',
        fmt="toml",
        base_dir=tmp_path,
        settings=SETTINGS,
        source="inline",
    )
    assert plan.path is None
    assert plan.label == "inline"
    assert plan.jobs[0].spec.venv == tmp_path / "env"
    with pytest.raises(ValidationError) as info:
        parse_batch_text(
            '[[job]]\nname = "a"\n', fmt="toml", base_dir=tmp_path, settings=SETTINGS, source="x"
        )
    assert info.value.problems == [
        'x: job[0] "a": give either `command`, or `trainer` with `config`'
    ]


# --------------------------------------------------------------------------- sweeps


def test_sweep_order_names_and_value_formatting(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[sweep]]
name = "s-{b}"
command = "train {a} {b} {c}"
grid = { a = [1, 2], b = ["x", "y"], c = [true, 0.30000000000000004] }
""",
    )
    plan = load_batch(path, SETTINGS)
    combos = [tuple(j.grid_values.values()) for j in plan.jobs]
    assert combos == [
        (a, b, c) for a in (1, 2) for b in ("x", "y") for c in (True, 0.30000000000000004)
    ]
    # keys the template does not use are appended; floats stay exact when "g" would round
    assert plan.jobs[0].spec.name == "s-x-a1-ctrue"
    assert plan.jobs[1].spec.name == "s-x-a1-c0.30000000000000004"
    assert plan.jobs[1].command_template == "train 1 x 0.30000000000000004"
    assert format_value(1e-4) == "0.0001"
    assert format_value(5e-5) == "5e-05"
    assert format_value(2.0) == "2"
    assert format_value(16) == "16"
    assert format_value(False) == "false"


def test_sweep_without_placeholders_gets_unique_names(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[sweep]]
name = "hero"
command = "python train.py"
grid = { "optimizer.lr" = [0.001, 0.002], seed = [7] }
""",
    )
    names = [j.spec.name for j in load_batch(path, SETTINGS).jobs]
    assert names == ["hero-lr0.001-seed7", "hero-lr0.002-seed7"]


def test_sweep_reports_a_shared_mistake_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[sweep]]
name = "s{a}"
command = "true"
gpus = -1
grid = { a = [1, 2, 3] }
""",
    )
    assert only_problem(path) == (
        'batch.toml: sweep[0] "s{a}" (a=1): gpus: Input should be greater than or equal to 0 '
        "(got -1)"
    ).replace("batch.toml", str(path))


# --------------------------------------------------------------------------- placeholders


def test_command_placeholders_quote_values_and_leave_shell_braces(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        r"""
[[sweep]]
name = "p{n}"
command = '''printf '%s\n' {caption} {n} ${HOME} {unknown} \
    "$(echo x | awk '{print $1}')" {name} {config}'''
config = "c.toml"
grid = { caption = ["a photo of $x; rm -rf /"], n = [1] }
""",
    )
    write(tmp_path, "lr = 1\n", "c.toml")
    job = load_batch(path, SETTINGS).jobs[0]
    assert job.command_template == (
        "printf '%s\\n' 'a photo of $x; rm -rf /' 1 ${HOME} {unknown} \\\n"
        "    \"$(echo x | awk '{print $1}')\" {name} {config}"
    )
    config = tmp_path / "my config.toml"
    command = fill_command(
        job.command_template, config=config, output_dir=tmp_path, job_id=7, name=job.spec.name
    )
    out = subprocess.run(
        ["bash", "-c", command], capture_output=True, text=True, check=True, env={"HOME": "/h"}
    ).stdout.splitlines()
    name = "p1-captiona photo of $x; rm -rf /"  # an unused grid key is appended to the name
    assert out == ["a photo of $x; rm -rf /", "1", "/h", "{unknown}", "x", name, str(config)]


def test_fill_command_fills_submit_placeholders(tmp_path: Path) -> None:
    out_dir = tmp_path / "out dir"
    command = fill_command(
        "run --out {output_dir} --id {job_id} --name {name} ${job_id}",
        config=None,
        output_dir=out_dir,
        job_id=12,
        name="it's",
    )
    assert command == f"run --out '{out_dir}' --id 12 --name 'it'\"'\"'s' ${{job_id}}"
    with pytest.raises(ValidationError, match=r"uses \{config\} but the job has no config"):
        fill_command("x {config}", config=None, output_dir=out_dir, job_id=1, name="a")


# --------------------------------------------------------------------------- trainers


def test_trainer_preset_and_command_override(batch_dir: Path) -> None:
    settings = Settings(trainers={"mine": TrainerPreset(command="mytrain --cfg {config}")})
    path = write(
        batch_dir,
        """
[[job]]
name = "preset"
trainer = "mine"
config = "configs/hero.toml"

[[job]]
name = "own"
trainer = "kohya"
config = "configs/hero.toml"
command = "python my_launcher.py {config}"
""",
        "t.toml",
    )
    preset, own = load_batch(path, settings).jobs
    assert preset.command_template == "mytrain --cfg {config}"
    assert preset.spec.parser is None
    assert own.command_template == "python my_launcher.py {config}"
    assert own.spec.parser == "kohya"


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[job]]\nname = "hero-v1"\ncommand = "x"\n[[job]]\nname = "hero-merge"\n'
            'command = "python merge.py"\ngpus = -1\n',
            'job[1] "hero-merge": gpus: Input should be greater than or equal to 0 (got -1)',
        ),
        (
            '[[job]]\nname = "a"\ncommand = "x"\ngpu = 2\n',
            'job[0] "a": gpu: unknown key (check its spelling; see the README for the keys)',
        ),
        ('[[job]]\ncommand = "x"\n', "job[0]: name: required key is missing"),
        ('[[job]]\nname = "a"\n', 'job[0] "a": give either `command`, or `trainer` with `config`'),
        (
            '[[job]]\nname = "a"\ntrainer = "kohyaa"\nconfig = "c.toml"\n',
            'job[0] "a": trainer: unknown trainer "kohyaa"; known: ai-toolkit, kohya, '
            "kohya-sdxl, onetrainer (or add one under [trainers] in settings)",
        ),
        (
            '[[job]]\nname = "a"\ncommand = "train {config}"\n',
            'job[0] "a": command: uses {config} but the job has no `config` file',
        ),
        (
            'jobs = []\n[[job]]\nname = "a"\ncommand = "x"\n',
            '"jobs": unknown top-level key (expected batch, defaults, job or sweep)',
        ),
        (
            '[defaults]\ngpu = 1\n[[job]]\nname = "a"\ncommand = "x"\n',
            "defaults: gpu: unknown key (check its spelling; see the README for the keys)",
        ),
        (
            '[defaults]\nname = "x"\n[[job]]\nname = "a"\ncommand = "x"\n',
            "defaults: name: not allowed in [defaults]; set it per job",
        ),
        (
            '[defaults]\nretries = "many"\n[[job]]\nname = "a"\ncommand = "x"\n',
            "defaults: retries: Input should be a valid integer, unable to parse string as an "
            "integer (got 'many')",
        ),
        (
            '[batch]\nname = 3\n[[job]]\nname = "a"\ncommand = "x"\n',
            "batch: name: Input should be a valid string (got 3)",
        ),
        (
            '[batch]\ntitle = "x"\n[[job]]\nname = "a"\ncommand = "x"\n',
            "batch: title: unknown key (check its spelling; see the README for the keys)",
        ),
        (
            '[job]\nname = "a"\ncommand = "x"\n',
            "job: expected a list of tables (write each as [[job]]) (got dict)",
        ),
        (
            '[[sweep]]\nname = "s"\ncommand = "x"\n',
            'sweep[0] "s": grid: required key is missing (a sweep needs a grid, '
            "e.g. grid = { learning_rate = [1e-4, 5e-5] })",
        ),
        (
            '[[sweep]]\nname = "s"\ncommand = "x"\ngrid = {}\n',
            'sweep[0] "s": grid: expected a table of key -> list of values (got {})',
        ),
        (
            '[[sweep]]\nname = "s"\ncommand = "x"\ngrid = { lr = [] }\n',
            'sweep[0] "s": grid.lr: expected a non-empty list of values (got [])',
        ),
        (
            '[[sweep]]\nname = "s"\ncommand = "x"\ngrid = { lr = 0.1 }\n',
            'sweep[0] "s": grid.lr: expected a non-empty list of values (got 0.1)',
        ),
        (
            '[[sweep]]\nname = "s"\ncommand = "x"\ngrid = { lr = [[0.1]] }\n',
            'sweep[0] "s": grid.lr: expected strings, numbers or booleans (got [0.1])',
        ),
        (
            '[[sweep]]\nname = "s"\ncommand = "x"\ngrid = { name = ["a"] }\n',
            'sweep[0] "s": grid.name: {name} is filled at submit time; use another grid key name',
        ),
        (
            '[[sweep]]\nname = "s"\ncommand = "x"\ngrid = { "a b" = [1] }\n',
            'sweep[0] "s": grid: "a b": a grid key is a config key: letters, digits, _, - and . '
            "(for a dotted key), starting with a letter or _",
        ),
        (
            '[[job]]\nname = "a"\ncommand = "x"\n[[job]]\nname = "a"\ncommand = "y"\n',
            'job[1] "a": name: duplicate job name "a" (also job[0] "a"); names in a batch are '
            "unique",
        ),
        (
            '[[job]]\nname = "s1"\ncommand = "x"\n'
            '[[sweep]]\nname = "s{n}"\ncommand = "x"\ngrid = { n = [1, 2] }\n',
            'sweep[0] "s{n}" (n=1): name: duplicate job name "s1" (also job[0] "s1"); names in '
            "a batch are unique",
        ),
        ("[defaults]\ngpus = 1\n", "no jobs; add a [[job]] or [[sweep]] table"),
        (
            '[[sweep]]\nname = "s"\ncommand = "x"\n'
            f"grid = {{ a = {list(range(10))}, b = {list(range(10))}, c = {list(range(10))}, "
            f"d = {list(range(10))}, e = [1, 2] }}\n",
            'sweep[0] "s": grid: expands to 20000 jobs; at most 10000 per sweep (split it, or '
            "drop some values)",
        ),
        (
            '[[job]]\nname = "a"\ncommand = "x"\nbad = \n',
            "not valid TOML: Invalid value (at line 4, column 7)",
        ),
    ],
)
def test_validation_errors_name_file_job_and_field(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    assert only_problem(path) == f"{path}: {expected}"


def test_validation_is_atomic_and_reports_every_problem(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[job]]
name = "good"
command = "true"

[[job]]
name = "bad-gpus"
command = "true"
gpus = 100

[[job]]
name = "bad-time"
command = "true"
timeout = "soon"
""",
    )
    found = problems_of(path)
    assert len(found) == 2
    assert found[0].startswith(f'{path}: job[1] "bad-gpus": gpus: Input should be less than')
    assert found[1].startswith(f"{path}: job[2] \"bad-time\": timeout: cannot read 'soon'")


@pytest.mark.parametrize(
    ("deps", "cycle"),
    [
        ({"a": ["b"], "b": ["a"]}, 'job[0] "a": depends_on: dependency cycle: a -> b -> a'),
        ({"a": ["a"]}, 'job[0] "a": depends_on: dependency cycle: a -> a'),
        (
            {"x": ["a"], "a": ["b"], "b": ["c"], "c": ["afterany:a"]},
            'job[1] "a": depends_on: dependency cycle: a -> b -> c -> a',
        ),
    ],
)
def test_dependency_cycles_are_printed(
    tmp_path: Path, deps: dict[str, list[str]], cycle: str
) -> None:
    text = "".join(
        f'[[job]]\nname = "{n}"\ncommand = "true"\ndepends_on = {json.dumps(d)}\n'
        for n, d in deps.items()
    )
    path = write(tmp_path, text)
    assert only_problem(path) == (
        f"{path}: {cycle} (each waits for the next; remove one dependency)"
    )


def test_unreadable_files_give_clear_errors(tmp_path: Path) -> None:
    assert only_problem(tmp_path / "nope.toml") == (
        f"{tmp_path / 'nope.toml'}: no such batch file; check the path"
    )
    assert "not UTF-8 text" in only_problem(
        _bytes(tmp_path / "latin.toml", 'name = "caf\xe9"'.encode("latin-1"))
    )
    assert "the batch file is empty" in only_problem(write(tmp_path, "  \n\n"))
    assert "no jobs; add a [[job]]" in only_problem(write(tmp_path, "# only a comment\n"))
    assert "must end in .toml, .yaml or .yml" in only_problem(write(tmp_path, "", "b.txt"))
    assert "is a folder" in only_problem(_folder(tmp_path / "dir.toml"))
    yaml_error = only_problem(write(tmp_path, "job: [\n  - a: b\n", "b.yaml"))
    assert yaml_error.startswith(f"{tmp_path / 'b.yaml'}: not valid YAML:")
    assert "line" in yaml_error
    assert only_problem(write(tmp_path, "- 1\n- 2\n", "list.yaml")).endswith(
        "expected a table with `job` and `sweep` lists at the top (got list)"
    )
    assert only_problem(write(tmp_path, "a = " + "[" * 5000, "deep.toml")).endswith(
        "nested too deeply to read"
    )
    assert only_problem(write(tmp_path, "when: 2024-13-45\n", "date.yaml")).endswith(
        "cannot parse it: month must be in 1..12"
    )
    assert only_problem(write(tmp_path, "job: [5]\n", "five.yaml")).endswith(
        "job[0]: expected a table of job keys (got int)"
    )


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def test_config_problems_are_found_at_load_time(batch_dir: Path) -> None:
    path = write(
        batch_dir,
        """
[[job]]
name = "missing"
trainer = "kohya"
config = "configs/nope.toml"

[[job]]
name = "broken"
trainer = "kohya"
config = "configs/broken.toml"

[[sweep]]
name = "ambiguous"
trainer = "ai-toolkit"
config = "configs/toolkit.yaml"
grid = { type = ["a"] }
""",
        "c.toml",
    )
    write(batch_dir / "configs", "lr = \n", "broken.toml")
    found = problems_of(path)
    configs = batch_dir / "configs"
    assert found[0] == (
        f'{path}: job[0] "missing": config: {configs / "nope.toml"}: no such config file '
        "(relative paths are relative to the batch file's folder)"
    )
    assert found[1] == (
        f'{path}: job[1] "broken": config: {configs / "broken.toml"}: not valid TOML: '
        "Invalid value (at line 1, column 6)"
    )
    assert found[2] == (
        f'{path}: sweep[0] "ambiguous" (type=a): config: {configs / "toolkit.yaml"}: key '
        "'type' is in several tables (config.process.0.type, config.process.0.network.type); "
        "write it as a dotted key to say which"
    )


# --------------------------------------------------------------------------- dependencies


def test_dependencies_on_names_outside_the_batch(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[job]]\nname = "a"\ncommand = "x"\ndepends_on = ["old-run", 12, "afterany:7"]\n',
    )
    plan = load_batch(path, SETTINGS)  # names outside the batch are for the store to answer
    assert plan.jobs[0].dep_names == (
        DependencyRef(job="old-run"),
        DependencyRef(job=12),
        DependencyRef(job=7, condition=DependencyCondition.AFTERANY),
    )
    check_dependencies(plan, lambda name: name == "old-run")
    with pytest.raises(ValidationError) as info:
        check_dependencies(plan, lambda name: False)
    assert info.value.problems == [
        f'{path}: job[0] "a": depends_on: no job named "old-run" in this batch or in the '
        "store (check the spelling, or give a job id)"
    ]


def test_sweep_name_stands_for_all_its_jobs(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[sweep]]
name = "train-{lr}"
command = "train {lr}"
grid = { lr = [1, 2] }

[[sweep]]
name = "plain"
command = "x"
grid = { seed = [1, 2] }

[[job]]
name = "pick"
command = "pick"
depends_on = ["afterany:train-{lr}", "plain-seed2"]
""",
    )
    plan = load_batch(path, SETTINGS)
    pick = plan.jobs[-1]
    assert pick.dep_names == (
        DependencyRef(job="train-1", condition=DependencyCondition.AFTERANY),
        DependencyRef(job="train-2", condition=DependencyCondition.AFTERANY),
        DependencyRef(job="plain-seed2"),
    )
    assert tuple(pick.spec.depends_on) == pick.dep_names
    check_dependencies(plan, lambda name: False)
    looped = write(
        tmp_path,
        '[[sweep]]\nname = "s"\ncommand = "x"\ndepends_on = ["s"]\ngrid = { n = [1, 2] }\n',
        "loop.toml",
    )
    assert "dependency cycle: s-n1 -> s-n1" in only_problem(looped)


def test_check_dependencies_finds_cycles_in_a_plan(tmp_path: Path) -> None:
    plan = plan_single({"name": "a", "command": "x"}, base_dir=tmp_path, settings=SETTINGS)
    job = plan.jobs[0]
    looped = BatchPlan(
        path=None,
        digest="",
        name=None,
        jobs=(
            type(job)(
                spec=job.spec,
                index=0,
                source='job "a"',
                grid_values={},
                command_template="x",
                dep_names=(DependencyRef(job="a"),),
            ),
        ),
        label="t",
    )
    with pytest.raises(
        ValidationError, match=r"t: job \"a\": depends_on: dependency cycle: a -> a"
    ):
        check_dependencies(looped, lambda name: True)


# --------------------------------------------------------------------------- paths, env


def test_relative_paths_resolve_against_the_batch_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    write(folder, "lr = 1\n", "c.toml")
    write(
        folder,
        """
[defaults]
venv = "../venvs/train"
env = { A = "1", B = "2" }

[[job]]
name = "a"
trainer = "kohya"
config = "c.toml"
workdir = "run"
output_dir = "/abs/out"
env = { B = "3" }

[[job]]
name = "b"
command = "x"
output_dir = "~/out"
""",
    )
    monkeypatch.chdir(tmp_path)
    a, b = load_batch(Path("project/batch.toml"), SETTINGS).jobs
    assert a.spec.config == folder / "c.toml"
    assert a.spec.workdir == folder / "run"
    assert a.spec.venv == tmp_path / "venvs" / "train"
    assert a.spec.output_dir == Path("/abs/out")
    assert a.spec.env == {"A": "1", "B": "3"}
    assert b.spec.workdir == folder
    assert b.spec.output_dir == Path("~/out").expanduser()
    assert b.spec.env == {"A": "1", "B": "2"}
    assert b.spec.user is None  # the submitter fills it


def test_plan_single_validates_like_a_batch_job(tmp_path: Path) -> None:
    plan = plan_single(
        {"name": "one", "command": "echo hi", "venv": "env"}, base_dir=tmp_path, settings=SETTINGS
    )
    assert plan.path is None
    assert [j.spec.name for j in plan.jobs] == ["one"]
    assert plan.jobs[0].spec.venv == tmp_path / "env"
    assert plan.jobs[0].source == 'job "one"'
    with pytest.raises(ValidationError) as info:
        plan_single(
            {"name": "one", "command": "x", "gpus": -2}, base_dir=tmp_path, settings=SETTINGS
        )
    assert info.value.problems == [
        'loradeck submit: job "one": gpus: Input should be greater than or equal to 0 (got -2)'
    ]


# --------------------------------------------------------------------------- config copies


def test_toml_copy_keeps_comments_and_order(batch_dir: Path, tmp_path: Path) -> None:
    src = batch_dir / "configs" / "hero.toml"
    dest = write_config_copy(
        src,
        tmp_path / "jobs" / "1" / "config.toml",
        {
            "network_dim": 32,
            "learning_rate": 5e-5,
            "seed": 7,
            "training_arguments.max_train_steps": 10,
        },
    )
    before = src.read_text().splitlines()
    after = dest.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after[1:], strict=False) if a != b]
    # one line added at the top level (seed), the three values replaced in place
    assert after[:2] == before[:2]
    assert "seed = 7" in after[:5]
    assert [line for line in after if line not in before] == [
        "seed = 7",
        "network_dim = 32        # rank of the LoRA",
        "learning_rate = 5e-05   # tuned by hand",
        "max_train_steps = 10",
    ]
    assert len(after) == len(before) + 1
    assert changed  # sanity: the comparison saw the edits
    data = tomllib.loads(dest.read_text())
    assert data["additional_network_arguments"]["network_dim"] == 32
    assert data["optimizer_arguments"]["learning_rate"] == 5e-5
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert sorted(p.name for p in dest.parent.iterdir()) == ["config.toml"]  # no temp file left


def test_copy_without_values_is_byte_for_byte(batch_dir: Path, tmp_path: Path) -> None:
    for name in ("hero.toml", "toolkit.yaml", "onetrainer.json"):
        src = batch_dir / "configs" / name
        dest = write_config_copy(src, tmp_path / name, {})
        assert dest.read_bytes() == src.read_bytes()


def test_yaml_copy_addresses_nested_lists(batch_dir: Path, tmp_path: Path) -> None:
    src = batch_dir / "configs" / "toolkit.yaml"
    dest = write_config_copy(
        src, tmp_path / "c.yaml", {"config.process.0.train.lr": 5e-5, "steps": 100, "linear": 32}
    )
    data = yaml.safe_load(dest.read_text())
    train = data["config"]["process"][0]["train"]
    assert (train["lr"], train["steps"]) == (5e-5, 100)
    assert data["config"]["process"][0]["network"]["linear"] == 32
    assert list(data) == ["job", "config"]  # order kept
    assert read_config_value(dest, "config.process.0.train.lr") == 5e-5
    with pytest.raises(ValidationError, match=r"'config.process.3' is a list of 1 item"):
        write_config_copy(src, tmp_path / "x.yaml", {"config.process.3.lr": 1})
    with pytest.raises(ValidationError, match=r"'train' is a table or list, not a value"):
        write_config_copy(src, tmp_path / "x.yaml", {"train": 1})


def test_update_in_place_and_read_back(batch_dir: Path, tmp_path: Path) -> None:
    copy = write_config_copy(batch_dir / "configs" / "hero.toml", tmp_path / "c.toml", {})
    batch = read_config_value(copy, "train_batch_size")
    accum = read_config_value(copy, "gradient_accumulation_steps")
    assert (batch, accum) == (4, 1)
    update_config_copy(copy, {"train_batch_size": 2, "gradient_accumulation_steps": 2})
    assert read_config_value(copy, "train_batch_size") == 2
    assert read_config_value(copy, "gradient_accumulation_steps") == 2
    assert "# rank of the LoRA" in copy.read_text()
    assert read_config_value(copy, "not_there") is None
    assert read_config_value(copy, "optimizer_arguments") == {
        "optimizer_type": "AdamW8bit",
        "learning_rate": 1e-4,
        "lr_scheduler": "cosine",
    }
    json_copy = write_config_copy(
        batch_dir / "configs" / "onetrainer.json", tmp_path / "c.json", {"learning_rate": 1e-4}
    )
    update_config_copy(json_copy, {"weight_decay": 0.1})
    assert json.loads(json_copy.read_text()) == {
        "learning_rate": 1e-4,
        "batch_size": 2,
        "optimizer": {"name": "ADAMW", "weight_decay": 0.1},
    }


def test_config_copy_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"no such config file"):
        write_config_copy(tmp_path / "none.toml", tmp_path / "out.toml", {"a": 1})
    two = write(tmp_path, "[a]\nx = 1\n[b]\nx = 2\n", "two.toml")
    with pytest.raises(ValidationError) as info:
        write_config_copy(two, tmp_path / "out.toml", {"x": 3}, where="b.toml: job[0]: config: ")
    assert info.value.problems == [
        f"b.toml: job[0]: config: {two}: key 'x' is in several tables (a.x, b.x); "
        "write it as a dotted key to say which"
    ]
    write_config_copy(two, tmp_path / "out.toml", {"b.x": 3})
    assert tomllib.loads((tmp_path / "out.toml").read_text()) == {"a": {"x": 1}, "b": {"x": 3}}
    text = write(tmp_path, "--lr 1\n", "args.txt")
    with pytest.raises(ValidationError, match=r"edits .toml, .yaml, .yml and .json"):
        write_config_copy(text, tmp_path / "out.txt", {"lr": 2})
    assert write_config_copy(text, tmp_path / "out.txt", {}).read_text() == "--lr 1\n"
    bad = write(tmp_path, "[1, 2]", "list.json")
    with pytest.raises(ValidationError, match=r"expected a table of settings at the top"):
        write_config_copy(bad, tmp_path / "o.json", {"a": 1})

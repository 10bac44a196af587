"""The demo's toy LoRA trainer (configs/demo/toy_lora.py), run for real.

Several short runs start at once (one torch thread each) and the tests read what they
printed and wrote: kohya's bar, epoch and checkpoint lines, checkpoint and sample
names, the loss going down, determinism, and the NaN / OOM / hang test hooks. The
console formatting and config checks are also tested in-process, without torch.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
from PIL import Image
from safetensors import safe_open
from safetensors.numpy import load_file

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parent.parent / "configs" / "demo"
RUN_TIMEOUT = 120.0

TINY = """\
network_dim = 8
network_alpha = 8
learning_rate = 1e-2
train_batch_size = 8
max_train_epochs = 3
seed = 3
dataset_size = 96
validation_split = 0.25
output_name = "tiny"
save_every_n_epochs = 1
sample_every_n_epochs = 1
sample_prompts = "prompts.txt"
"""
STEPS = 27  # 72 training images / batch 8 = 9 steps per epoch, 3 epochs

BAR_RE = re.compile(
    r"steps: +(\d+)%\|[ ▏▎▍▌▋▊▉█]{10}\| (\d+)/(\d+) "
    r"\[\d\d:\d\d<(?:\d\d:\d\d|\?), +(?:[\d.]+(?:it/s|s/it)|\?it/s)"
    r"(?:, avr_loss=([^\]]+))?\]"
)
VAL_RE = re.compile(
    r"epoch validation steps: 100%\|█{10}\| (\d+)/\1 .*val_epoch_avg_loss=([^\]]+)\]"
)
NUMBER = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"


@dataclass
class Run:
    """One trainer process: its folders and, once finished, what it printed."""

    name: str
    folder: Path
    proc: subprocess.Popen[bytes]
    returncode: int | None = None

    @property
    def out_dir(self) -> Path:
        return self.folder / "out"

    @property
    def stdout(self) -> str:
        return read(self.folder / "stdout.txt")

    @property
    def stderr(self) -> str:
        return read(self.folder / "stderr.txt")

    def finish(self) -> Run:
        self.returncode = self.proc.wait(timeout=RUN_TIMEOUT)
        return self


def read(path: Path) -> str:
    """The file's text with its \\r kept (read_text would turn them into newlines)."""
    return path.read_bytes().decode("utf-8")


def start(folder: Path, name: str, config_text: str) -> Run:
    """Run the trainer as loradeck would: a config copy kept elsewhere, cwd = demo folder."""
    folder.mkdir(parents=True)
    config = folder / "config.toml"
    config.write_text(config_text, encoding="utf-8")
    env = {
        **os.environ,
        "LORADECK_OUTPUT_DIR": str(folder / "out"),
        "COLUMNS": "250",  # log lines unwrapped, so the tests can match whole messages
    }
    with (
        (folder / "stdout.txt").open("wb") as stdout,
        (folder / "stderr.txt").open("wb") as stderr,
    ):
        proc = subprocess.Popen(
            [sys.executable, str(DEMO / "toy_lora.py"), "--config_file", str(config)],
            cwd=DEMO,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    return Run(name=name, folder=folder, proc=proc)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Run]]:
    base = tmp_path_factory.mktemp("toy")
    without_length = TINY.replace("max_train_epochs = 3\n", "")
    started = {
        "main": start(base / "main", "main", TINY),
        "nan": start(
            base / "nan", "nan", without_length + "max_train_steps = 8\nnan_at_step = 4\n"
        ),
        "oom": start(base / "oom", "oom", TINY + "oom_at_step = 3\n"),
        "hang": start(base / "hang", "hang", TINY + "hang_at_step = 3\n"),
    }
    try:
        yield started
    finally:
        for run in started.values():
            if run.proc.poll() is None:
                run.proc.kill()
            run.proc.wait(timeout=RUN_TIMEOUT)


@pytest.fixture(scope="module")
def main_run(runs: dict[str, Run]) -> Run:
    run = runs["main"].finish()
    assert run.returncode == 0, run.stderr
    return run


def bars(stdout: str) -> list[re.Match[str]]:
    """Every drawing of the main bar (redraws are separated by \\r)."""
    return [m for part in re.split(r"[\r\n]", stdout) if (m := BAR_RE.fullmatch(part.rstrip()))]


def avr_losses(stdout: str) -> list[float]:
    """``avr_loss`` after each optimiser step (a redraw of the same step counted once)."""
    by_step = {int(m.group(2)): float(m.group(4)) for m in bars(stdout) if m.group(4)}
    return [by_step[step] for step in sorted(by_step)]


# --------------------------------------------------------------------------- a normal run


def test_prints_kohya_bar_redrawn_with_carriage_returns(main_run: Run) -> None:
    out = main_run.stdout
    assert "\rsteps:" in out
    drawn = bars(out)
    assert [int(m.group(3)) for m in drawn] == [STEPS] * len(drawn)
    # one redraw per optimiser step, plus the first (empty) drawing and the final one
    assert sorted({int(m.group(2)) for m in drawn}) == list(range(STEPS + 1))
    last = drawn[-1]
    assert (last.group(1), last.group(2)) == ("100", str(STEPS))
    assert drawn[0].group(0).startswith("steps:   0%|          | 0/27 [00:00<?, ?it/s")


def test_prints_epoch_and_checkpoint_lines(main_run: Run) -> None:
    out, err, ckpt = main_run.stdout, main_run.stderr, main_run.out_dir
    for epoch in (1, 2, 3):
        assert f"\nepoch {epoch}/3\n\n" in out
        assert f"epoch is incremented. current_epoch: {epoch - 1}, epoch: {epoch}" in err
    assert f"saving checkpoint: {ckpt}/tiny-000001.safetensors\n" in out
    assert f"saving checkpoint: {ckpt}/tiny-000002.safetensors\n" in out
    assert f"saving checkpoint: {ckpt}/tiny.safetensors\n" in out
    assert "tiny-000003" not in out  # kohya saves the last epoch as the final model only
    assert re.search(
        r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO +Loading settings from .*toy_lora\.py:\d+$",
        err,
        re.M,
    )
    assert re.search(r"INFO +model saved\. +toy_lora\.py:\d+$", err, re.M)
    sample_logs = re.findall(
        r"generating sample images at step / サンプル画像生成 ステップ: (\d+)", err
    )
    assert sample_logs == ["9", "18", "27"]


def test_writes_loadable_checkpoints_with_kohya_names(main_run: Run) -> None:
    names = sorted(p.name for p in main_run.out_dir.glob("*.safetensors"))
    assert names == ["tiny-000001.safetensors", "tiny-000002.safetensors", "tiny.safetensors"]
    tensors = load_file(main_run.out_dir / "tiny.safetensors")
    assert tensors["lora_unet_fc1.lora_down.weight"].shape[0] == 8
    assert tensors["lora_unet_to_rgb.lora_up.weight"].shape[1] == 8
    assert float(tensors["lora_te_text_proj.alpha"]) == 8.0
    assert all(math.isfinite(float(v)) for t in tensors.values() for v in t.reshape(-1)[:50])
    with safe_open(str(main_run.out_dir / "tiny-000002.safetensors"), framework="numpy") as f:
        meta = f.metadata()
    assert meta["ss_epoch"] == "2"
    assert meta["ss_steps"] == "18"
    assert meta["ss_network_dim"] == "8"


def test_writes_samples_with_kohya_names(main_run: Run) -> None:
    found = sorted((main_run.out_dir / "sample").iterdir())
    pattern = re.compile(r"tiny_e(\d{6})_(\d{2})_(\d{14})_(\d+)\.png")
    matches = [pattern.fullmatch(p.name) for p in found]
    assert all(matches), [p.name for p in found]
    keys = sorted((int(m.group(1)), int(m.group(2)), int(m.group(4))) for m in matches if m)
    assert keys == [(e, i, 42 + i) for e in (1, 2, 3) for i in range(4)]
    for path in found:
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (64, 64)
            image.verify()


def test_loss_is_finite_and_goes_down(main_run: Run) -> None:
    losses = avr_losses(main_run.stdout)
    assert len(losses) == STEPS
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.75 * losses[0]
    val = [float(m.group(2)) for m in VAL_RE.finditer(main_run.stdout.replace("\r", "\n"))]
    assert len(val) >= 3
    assert all(math.isfinite(x) for x in val)
    assert val[-1] < val[0]


def test_same_seed_same_losses_in_another_process(main_run: Run, runs: dict[str, Run]) -> None:
    # The OOM run has the same config up to its hook: its first steps must match exactly.
    oom = runs["oom"].finish()
    assert avr_losses(oom.stdout) == avr_losses(main_run.stdout)[:2]


# --------------------------------------------------------------------------- test hooks


def test_nan_at_step_shows_nan_average_loss(runs: dict[str, Run]) -> None:
    run = runs["nan"].finish()
    assert run.returncode == 0, run.stderr  # kohya carries on after a divergence
    drawn = [(int(m.group(2)), m.group(4)) for m in bars(run.stdout) if m.group(4)]
    assert all(re.fullmatch(NUMBER, loss) for step, loss in drawn if step < 4)
    assert all(loss == "nan" for step, loss in drawn if step >= 4)
    assert ", avr_loss=nan]" in run.stdout


def test_oom_at_step_prints_cuda_oom_and_fails(runs: dict[str, Run]) -> None:
    run = runs["oom"].finish()
    assert run.returncode == 1
    assert "Traceback (most recent call last):" in run.stderr
    assert "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" in run.stderr
    assert max(int(m.group(2)) for m in bars(run.stdout)) == 2


def test_hang_at_step_goes_silent_and_stays_alive(runs: dict[str, Run]) -> None:
    run = runs["hang"]
    stdout = run.folder / "stdout.txt"
    deadline = time.monotonic() + RUN_TIMEOUT
    while not any(int(m.group(2)) == 2 for m in bars(read(stdout))):
        assert run.proc.poll() is None, run.stderr
        assert time.monotonic() < deadline, "the run never reached step 2"
        time.sleep(0.05)
    # A broken hook would finish the 27 steps and exit within this wait.
    with pytest.raises(subprocess.TimeoutExpired):
        run.proc.wait(timeout=3)
    assert max(int(m.group(2)) for m in bars(read(stdout))) == 2
    assert "model saved" not in run.stderr


# --------------------------------------------------------------------------- in-process


def load_demo_module(name: str) -> ModuleType:
    """A module of configs/demo (the ones that do not import torch)."""
    spec = importlib.util.spec_from_file_location(f"demo_{name}", DEMO / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bar_renders_the_kohya_line_exactly() -> None:
    console = load_demo_module("toy_console")
    bar = console.ProgressBar("steps", total=1000, stream=io.StringIO())
    bar.update(450)
    bar.postfix = "avr_loss=" + console.format_number(0.0812)
    text = bar.render(elapsed=301.5, columns=None)
    assert text == "steps:  45%|████▌     | 450/1000 [05:01<06:08,  1.49it/s, avr_loss=0.0812]"
    slow = console.ProgressBar("steps", total=3280, stream=io.StringIO())
    slow.update(41)
    slow.set_postfix(avr_loss=float("nan"))
    text = slow.render(elapsed=50.815, columns=None)
    assert text.endswith("| 41/3280 [00:50<1:06:54,  1.24s/it, avr_loss=nan]")
    assert len(slow.render(elapsed=50.815, columns=120)) == 120


def test_log_lines_wrap_like_rich() -> None:
    console = load_demo_module("toy_console")
    stream = io.StringIO()
    log = console.RichLog(stream=stream, columns=80)
    message = "generating sample images at step / サンプル画像生成 ステップ: 1234 " + "x" * 70
    log.info(message)
    lines = stream.getvalue().splitlines()
    assert len(lines) > 2
    assert all(console.cell_width(line) <= 80 for line in lines)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO {5}\S.* test_demo_trainer\.py:\d+", lines[0]
    )
    assert all(line.startswith(" " * 29) for line in lines[1:])
    first = lines[0][29:].rsplit(" ", 1)[0]  # without the file:line column
    rest = [line[29:] for line in lines[1:]]
    assert "".join([first, *rest]).replace(" ", "") == message.replace(" ", "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("network_dimm = 4\n", r"unknown key\(s\) network_dimm"),
        ("network_dim = 2.5\n", r"network_dim = 2.5 must be a whole number"),
        ("learning_rate = 'fast'\n", r"learning_rate = 'fast' must be a number"),
        ("validation_split = 1.0\n", r"validation_split = 1.0 must be below 1"),
        ("sample_prompts = 'missing.txt'\n", r"sample_prompts = 'missing.txt': no such file"),
        ("[a]\nseed = 1\n[b]\nseed = 2\n", r"'seed' is set twice"),
        ("seed = \n", r"not valid TOML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    config_module = load_demo_module("toy_config")
    config = tmp_path / "bad.toml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(config_module.ConfigError, match=expected) as caught:
        config_module.load_config(config, environ={"LORADECK_OUTPUT_DIR": str(tmp_path)})
    assert str(config) in str(caught.value)


def test_output_dir_needed_from_config_or_environment(tmp_path: Path) -> None:
    config_module = load_demo_module("toy_config")
    config = tmp_path / "c.toml"
    config.write_text("seed = 1\n", encoding="utf-8")
    with pytest.raises(config_module.ConfigError, match="LORADECK_OUTPUT_DIR"):
        config_module.load_config(config, environ={})
    config.write_text("output_dir = 'runs'\n", encoding="utf-8")
    loaded = config_module.load_config(config, environ={"LORADECK_OUTPUT_DIR": "/elsewhere"})
    assert loaded.output_dir.is_absolute()
    assert loaded.output_dir.name == "runs"

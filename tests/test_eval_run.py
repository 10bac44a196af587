"""End to end: evaluating real folders and stored jobs, bad input, generation, the
evaluation process offline, ``loradeck eval`` and ``loradeck results``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from argparse import Namespace
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

pytest.importorskip("open_clip")

from test_eval_clip import load_tiny
from test_eval_discovery import image, kohya_run

from loradeck.core.batch import plan_single
from loradeck.core.evaluation.clip import ClipScorer
from loradeck.core.evaluation.commands import (
    cmd_eval,
    cmd_results,
    evaluation_job_fields,
)
from loradeck.core.evaluation.evaluator import EvalOptions, evaluate
from loradeck.core.evaluation.jobinputs import target_for_job, target_for_path
from loradeck.core.evaluation.prompts import prompts_from_setting
from loradeck.core.evaluation.results import read_results, results_path, write_results
from loradeck.core.evaluation.tinyclip import write_tiny_model
from loradeck.core.home import Home
from loradeck.core.models import Job
from loradeck.core.settings import Settings
from loradeck.core.store import Store
from loradeck.core.submit import submit_plan

ALL = ("clip_score", "fid", "consistency", "sharpness", "val_loss")


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tinyclip")
    write_tiny_model(folder, seed=0)
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tiny_clip_dir: Path) -> ClipScorer:
    return load_tiny(tiny_clip_dir)


def _options(**changes: object) -> EvalOptions:
    base = EvalOptions(metrics=ALL, device="cpu", fid_min_images=3, max_reference_images=24)
    return replace(base, **changes)  # type: ignore[arg-type]


def _references(folder: Path, count: int = 12) -> Path:
    for index in range(count):
        image(folder / "10_toy" / f"{index}.png", seed=1000 + index)
    (folder / "10_toy" / "0.txt").write_text("caption", encoding="utf-8")
    return folder


def test_folder_with_corrupt_and_black_images(tmp_path: Path, tiny_clip: ClipScorer) -> None:
    run = kohya_run(tmp_path / "run")
    sample = run / "sample"
    corrupt = next(sample.glob("toy_e000010_01_*"))
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n broken")
    black = next(sample.glob("toy_e000015_02_*"))
    image(black, value=0)
    target = target_for_path(
        run, reference_dir=_references(tmp_path / "train"), prompt_file=run / "prompts.txt"
    )
    options = _options(fid_min_images=2)
    results = evaluate(target, options, clip=lambda: tiny_clip, log=lambda _: None)

    assert results.layout == "kohya" and results.error is None
    assert results.clip is not None and results.clip.available
    by_key = {c.key: c for c in results.checkpoints}
    assert list(by_key) == [
        "toy-000005.safetensors",
        "toy-000010.safetensors",
        "toy-000015.safetensors",
        "toy.safetensors",
    ]
    for item in by_key.values():
        assert item.metrics["clip_score"].value is not None
        assert item.metrics["fid"].value is not None and item.metrics["fid"].value >= 0
        assert item.metrics["sharpness"].value is not None
        assert "one image" in (item.metrics["consistency"].reason or "")
        assert item.metrics["val_loss"].reason == "no training log (evaluating a folder, not a job)"
        assert item.contact_sheet is not None and item.contact_sheet.is_file()
    broken = by_key["toy-000010.safetensors"]
    assert any(corrupt.name in e and "image" in e for e in broken.errors), broken.errors
    assert broken.metrics["clip_score"].n == 2
    assert by_key["toy-000015.safetensors"].metrics["artifacts"].value == pytest.approx(1 / 3)
    assert [i.prompt for i in by_key["toy.safetensors"].images] == [
        "a large red circle at the center",
        "a small yellow triangle at the left",
        "a white square at the bottom",
    ]
    assert results.best in by_key and by_key[results.best].combined is not None
    assert all(0 <= (c.combined or 0) <= 1 for c in results.checkpoints)
    path = write_results(results, results_path(run))
    assert read_results(path) == results


def test_bad_prompt_file_leaves_the_rest_scored(tmp_path: Path, tiny_clip: ClipScorer) -> None:
    run = kohya_run(tmp_path / "run", epochs=(1, 2))
    (run / "prompts.txt").write_text("good prompt\nbad --d seven\n", encoding="utf-8")
    target = target_for_path(run, prompt_file=run / "prompts.txt")
    results = evaluate(target, _options(), clip=lambda: tiny_clip, log=lambda _: None)
    for item in results.checkpoints:
        reason = item.metrics["clip_score"].reason or ""
        assert "prompts.txt:2: --d 'seven' is not a whole number" in reason
        assert any("prompts.txt:2" in e for e in item.errors)
        assert item.metrics["sharpness"].value is not None
    assert "no reference images" in (results.checkpoints[0].metrics["fid"].reason or "")
    assert any("prompts.txt:2" in p for p in results.problems)
    assert results.best is not None


def test_empty_folder_is_an_error_result(tmp_path: Path) -> None:
    (tmp_path / "run" / "sample").mkdir(parents=True)
    results = evaluate(target_for_path(tmp_path / "run"), _options(), log=lambda _: None)
    assert results.error is not None and "nothing to evaluate" in results.error
    assert results.checkpoints == []


@dataclass
class _Ctx:
    args: Namespace
    settings: Settings
    home: Home
    store: Store


def _submit_toy_job(tmp_path: Path, store: Store, home: Home, name: str, batch: bool) -> Job:
    configs = tmp_path / "configs"
    configs.mkdir(exist_ok=True)
    (configs / "prompts.txt").write_text(
        "a red circle --d 1\na blue square --d 2\n", encoding="utf-8"
    )
    train = _references(tmp_path / "train")
    config = configs / f"{name}.toml"
    config.write_text(
        f'output_name = "toy"\nsample_prompts = "prompts.txt"\ntrain_data_dir = "{train}"\n',
        encoding="utf-8",
    )
    fields = {
        "name": name,
        "command": "python toy_lora.py --config_file {config}",
        "config": str(config),
        "parser": "kohya",
        "gpus": 0,
    }
    plan = plan_single(fields, base_dir=tmp_path, settings=Settings())
    if batch:
        plan = replace(plan, path=tmp_path / "batch.toml")
    _, (job,) = submit_plan(store, home, plan)
    kohya_run(job.output_dir, epochs=(1, 2), prompts=2)
    job.log_file.write_text(
        "\nepoch 1/2\n\nepoch validation steps: 100%|#| 4/4 [00:00, val_epoch_avg_loss=0.30]\n"
        "\nepoch 2/2\n\nepoch validation steps: 100%|#| 4/4 [00:00, val_epoch_avg_loss=0.20]\n",
        encoding="utf-8",
    )
    return job


def test_job_results_and_the_results_command(
    tmp_path: Path, tiny_clip: ClipScorer, capsys: pytest.CaptureFixture[str]
) -> None:
    home = Home.open(tmp_path / "home")
    with Store(home.root) as store:
        job = _submit_toy_job(tmp_path, store, home, "toy-a", batch=True)
        target = target_for_job(job)
        assert target.prompt_file == tmp_path / "configs" / "prompts.txt"
        assert target.reference_dirs == (tmp_path / "train",)
        assert target.layout_hint == "kohya" and target.log_file == job.log_file
        results = evaluate(target, _options(), clip=lambda: tiny_clip, log=lambda _: None)
        losses = [c.metrics["val_loss"].value for c in results.checkpoints]
        assert losses == [pytest.approx(0.30), pytest.approx(0.20)]
        assert results.checkpoints[0].metrics["fid"].reason is not None  # 2 images < 3
        write_results(results, results_path(job.job_dir))

        ctx = _Ctx(Namespace(ids=[], batch=None, json=True, csv=False), Settings(), home, store)
        assert cmd_results(ctx) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["rows"][0]["key"] == results.best
        assert data["rows"][0]["best_in_group"] and data["rows"][0]["group"].startswith("batch")
        ctx.args = Namespace(ids=[str(job.id)], batch=None, json=False, csv=True)
        assert cmd_results(ctx) == 0
        assert capsys.readouterr().out.startswith("group,rank,job_id,job_name,checkpoint")

        fields = evaluation_job_fields(job, home=home.root, settings=Settings())
        eval_plan = plan_single(fields, base_dir=job.job_dir, settings=Settings())
        (planned,) = eval_plan.jobs
        assert planned.spec.tags == ["evaluation"] and planned.spec.gpus == 1
        assert planned.spec.vram_gb == 8.0
        assert [(d.job, d.condition) for d in planned.dep_names] == [(job.id, "afterok")]
        assert f"-m loradeck.core.evaluation.run --home {home.root} --job {job.id}" in (
            planned.spec.command or ""
        )


GENERATOR = textwrap.dedent(
    """
    import argparse, sys
    from pathlib import Path
    import numpy as np
    from PIL import Image
    p = argparse.ArgumentParser()
    for name in ("--ckpt", "--prompts", "--out", "--seed"):
        p.add_argument(name)
    a = p.parse_args()
    if "checkpoint-200" in a.ckpt:
        sys.exit(3)
    prompts = Path(a.prompts).read_text().splitlines()
    rng = np.random.default_rng(int(a.seed))
    for i, _ in enumerate(prompts):
        blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        pixels = np.kron(blocks, np.ones((8, 8, 1), dtype=np.uint8))
        Image.fromarray(pixels).save(Path(a.out) / f"{i:02d}-sample.png")
    """
)


def test_generate_command_for_checkpoints_without_samples(
    tmp_path: Path, tiny_clip: ClipScorer
) -> None:
    run = tmp_path / "out"
    for step in (100, 200, 300):
        (run / f"checkpoint-{step}").mkdir(parents=True)
    script = tmp_path / "gen.py"
    script.write_text(GENERATOR, encoding="utf-8")
    template = (
        f"{sys.executable} {script} "
        "--ckpt {checkpoint} --prompts {prompts} --out {out_dir} --seed {seed}"
    )
    options = _options(
        generate_command=template,
        num_samples=2,
        test_prompts=tuple(prompts_from_setting(["a fox", "a hen"])),
    )
    results = evaluate(target_for_path(run), options, clip=lambda: tiny_clip, log=lambda _: None)
    by_key = {c.key: c for c in results.checkpoints}
    assert results.layout == "diffusers"
    failed = by_key["checkpoint-200"]
    assert any("exited with status 3" in e for e in failed.errors)
    assert failed.metrics["sharpness"].reason == "no readable sample images"
    for key in ("checkpoint-100", "checkpoint-300"):
        item = by_key[key]
        assert len(item.images) == 4 and {i.seed for i in item.images} == {0, 1}
        assert {i.prompt for i in item.images} == {"a fox", "a hen"}
        assert item.metrics["consistency"].value is not None and item.metrics["consistency"].n == 2
        assert item.metrics["clip_score"].value is not None
    assert results.best in ("checkpoint-100", "checkpoint-300")


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "HTTPS_PROXY", "https_proxy"))
    }
    env.update(extra)
    return env


@pytest.mark.slow
def test_offline_named_weights_fail_fast_and_the_rest_is_scored(tmp_path: Path) -> None:
    home = Home.open(tmp_path / "home")
    with Store(home.root) as store:
        job = _submit_toy_job(tmp_path, store, home, "toy-offline", batch=False)
    settings_file = tmp_path / "config.toml"
    settings_file.write_text('[evaluation]\nclip_model = "ViT-B-32"\nclip_pretrained = "openai"\n')
    # An empty Hugging Face cache and a Hub that refuses connections: offline.
    env = _env(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT="http://127.0.0.1:9")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loradeck.core.evaluation.run",
            "--home",
            str(home.root),
            "--job",
            str(job.id),
            "--config",
            str(settings_file),
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    results = read_results(results_path(job.job_dir))
    assert results.clip is not None and not results.clip.available
    reason = results.clip.reason or ""
    assert "cannot be reached (offline)" in reason
    assert "hf download timm/vit_base_patch32_clip_224.openai" in reason
    assert str(tmp_path / "hf" / "hub") in reason
    for item in results.checkpoints:
        assert item.metrics["clip_score"].reason == reason
        assert item.metrics["sharpness"].value is not None
        assert item.metrics["val_loss"].value is not None
    assert results.best is not None
    assert "CLIP weights ViT-B-32/openai are not on this machine" in done.stdout


@pytest.mark.slow
def test_loradeck_eval_runs_the_evaluation_process(tmp_path: Path, tiny_clip_dir: Path) -> None:
    run = kohya_run(tmp_path / "run", epochs=(1, 2), prompts=2)
    settings_file = tmp_path / "config.toml"
    settings_file.write_text(
        f'[evaluation]\nclip_model = "local-dir:{tiny_clip_dir}"\n'
        'metrics = ["clip_score", "sharpness"]\nweights = { clip_score = 2.0 }\n'
    )
    home = Home.open(tmp_path / "home")
    args = Namespace(
        target=str(run),
        config=str(settings_file),
        device="cpu",
        prompts=str(run / "prompts.txt"),
        reference=None,
        queue=False,
    )
    with Store(home.root) as store:
        assert cmd_eval(_Ctx(args, Settings(), home, store)) == 0
    results = read_results(results_path(run))
    assert results.clip is not None and results.clip.available
    assert results.weights == {"clip_score": 2.0, "sharpness": 1.0}
    assert all(c.metrics["clip_score"].value is not None for c in results.checkpoints)
    assert (run / "evaluation" / "contact_sheets" / "toy.safetensors.png").is_file()

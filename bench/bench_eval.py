"""Issue 7 benchmark: images scored per second with the tiny CLIP model, batched vs one
at a time (target: batched >= 3x), and a whole evaluation of a synthetic run.

CPU always; the same on the GPU when one is visible (fp16 there). Nothing is downloaded:
the model is the tiny random one from ``loradeck.core.evaluation.tinyclip``.

    .venv/bin/python bench/bench_eval.py [--images 256] [--size 64] [--threads N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from loradeck.core.evaluation.clip import ClipScorer
from loradeck.core.evaluation.evaluator import EvalOptions, evaluate
from loradeck.core.evaluation.jobinputs import target_for_path
from loradeck.core.evaluation.tinyclip import write_synthetic_run, write_tiny_model

PROMPTS = ["a red circle", "a blue square", "a green triangle", "a white star"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def images_per_second(scorer: ClipScorer, images: list[np.ndarray], batch_size: int) -> float:
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(len(images))]
    scorer.score(images[:batch_size], prompts[:batch_size], batch_size=batch_size)  # warm up
    _sync(scorer.device)
    start = time.perf_counter()
    if batch_size == 1:
        for image, prompt in zip(images, prompts, strict=True):
            scorer.score([image], [prompt], batch_size=1)
    else:
        scorer.score(images, prompts, batch_size=batch_size)
    _sync(scorer.device)
    return len(images) / (time.perf_counter() - start)


def run_device(model: str, device: str, count: int, size: int, work: Path) -> None:
    scorer = ClipScorer.load(model, "", device=device)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(count)]
    one = images_per_second(scorer, images[: max(32, count // 4)], 1)
    batched = images_per_second(scorer, images, 64)
    print(
        f"{device} ({scorer.dtype}): one at a time {one:,.0f} img/s, "
        f"batched (64) {batched:,.0f} img/s, speed-up {batched / one:.1f}x (target >= 3x)"
    )
    run = write_synthetic_run(work / f"run-{device}", checkpoints=8, prompts=8, size=size)
    options = EvalOptions(clip_model=model, clip_pretrained="", device=device, fid_min_images=4)
    start = time.perf_counter()
    target = target_for_path(run, reference_dir=run / "train", prompt_file=run / "prompts.txt")
    results = evaluate(target, options, log=lambda _: None)
    seconds = time.perf_counter() - start
    scored = sum(len(c.images) for c in results.checkpoints)
    print(
        f"{device}: whole evaluation of {len(results.checkpoints)} checkpoints, {scored} images "
        f"(load, sharpness, CLIP, consistency, FID, contact sheets): {seconds:.2f} s, "
        f"{scored / seconds:,.0f} img/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = write_tiny_model(work / "tiny")
        run_device(model, "cpu", args.images, args.size, work)
        if torch.cuda.is_available():
            run_device(model, "cuda", args.images * 8, args.size, work)
        else:
            print("cuda: no GPU visible; run this on a GPU machine for the GPU figures")


if __name__ == "__main__":
    main()

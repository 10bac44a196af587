"""One real CUDA run of the evaluator with the tiny CLIP model; prints images per second.

Run it once on a machine with an NVIDIA GPU (nothing is downloaded):

    .venv/bin/python scripts/eval_gpu_check.py [--images 4096] [--size 256]

It checks that the model runs in fp16 on the GPU, that batched and one-at-a-time scores
agree there, prints the images scored per second both ways, then evaluates a synthetic
kohya-shaped run on the GPU (CLIP score, consistency, FID, sharpness, contact sheets) and
prints its results table. Exit status 0 when all of it worked, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from loradeck.core.evaluation.clip import ClipScorer
from loradeck.core.evaluation.evaluator import EvalOptions, evaluate
from loradeck.core.evaluation.jobinputs import target_for_path
from loradeck.core.evaluation.leaderboard import build_leaderboard, format_table
from loradeck.core.evaluation.tinyclip import write_synthetic_run, write_tiny_model


def _rate(scorer: ClipScorer, images: list[np.ndarray], prompts: list[str], batch: int) -> float:
    scorer.score(images[:batch], prompts[:batch], batch_size=batch)  # warm up (kernels, cache)
    torch.cuda.synchronize()
    start = time.perf_counter()
    if batch == 1:
        for image, prompt in zip(images, prompts, strict=True):
            scorer.score([image], [prompt], batch_size=1)
    else:
        scorer.score(images, prompts, batch_size=batch)
    torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--size", type=int, default=256, help="side of the test images")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA GPU visible to torch; run this on a GPU machine", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = write_tiny_model(work / "tiny")
        scorer = ClipScorer.load(model, "", device="cuda")
        print(f"model on {scorer.device}, dtype {scorer.dtype}")
        ok = scorer.device.type == "cuda" and scorer.dtype == torch.float16
        rng = np.random.default_rng(0)
        images = [
            rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
            for _ in range(args.images)
        ]
        prompts = [f"a picture number {i % 16}" for i in range(args.images)]
        batched = scorer.score(images[:64], prompts[:64], batch_size=64)
        single = np.array(
            [scorer.score([i], [p])[0] for i, p in zip(images[:64], prompts[:64], strict=True)]
        )
        gap = float(np.abs(batched - single).max())
        print(f"batched vs one at a time on the GPU (fp16): max CLIP score difference {gap:.4f}")
        ok = ok and gap < 0.5
        one = _rate(scorer, images[:256], prompts[:256], 1)
        many = _rate(scorer, images, prompts, args.batch)
        print(
            f"cuda: {args.size}x{args.size} images, one at a time {one:,.0f} img/s, "
            f"batched ({args.batch}) {many:,.0f} img/s, speed-up {many / one:.1f}x"
        )
        run = write_synthetic_run(work / "run", checkpoints=6, prompts=16, size=args.size)
        options = EvalOptions(clip_model=model, clip_pretrained="", device="cuda", fid_min_images=8)
        target = target_for_path(run, reference_dir=run / "train", prompt_file=run / "prompts.txt")
        start = time.perf_counter()
        results = evaluate(target, options, log=print)
        seconds = time.perf_counter() - start
        scored = sum(len(c.images) for c in results.checkpoints)
        rate = scored / seconds
        print(f"cuda: whole evaluation, {scored} images in {seconds:.2f} s ({rate:,.0f} img/s)")
        board = build_leaderboard(
            [("run", results)], metrics=results.metrics, weights=results.weights
        )
        print(format_table(board))
        clip_ok = (
            results.clip is not None and results.clip.available and results.clip.device == "cuda"
        )
        fid_ok = all(c.metrics["fid"].value is not None for c in results.checkpoints)
        print(f"CLIP on cuda: {clip_ok}; FID for every checkpoint: {fid_ok}")
        ok = ok and clip_ok and fid_ok and results.best is not None
    print("GPU check:", "OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Automatic checkpoint evaluation: find a run's checkpoints and samples, score them
(CLIP score, FID, consistency, sharpness, artifacts, validation loss), rank them, and keep
the results in ``<job folder>/evaluation/results.json``.

This package is the only part of loradeck that uses torch, torchvision, open_clip and
torchmetrics, and it imports them only inside the evaluation process
(``python -m loradeck.core.evaluation.run``). The modules the CLI, the engine and the TUI
import (``commands``, ``leaderboard``, ``results``, ``scoring``, ``discovery``,
``prompts``, ``jobinputs``) import none of them, nor numpy or Pillow.
"""

"""A toy LoRA trainer for loradeck's demo: real training, kohya-shaped output.

**This is a toy model for the demo, not a real image generator.** It exists so that
``loradeck demo`` can run a real sweep on a laptop without a GPU: every job really
trains low-rank adapters with torch (one CPU thread), really writes ``.safetensors``
checkpoints and PNG samples, and prints what kohya-ss/sd-scripts' ``train_network.py``
prints, so loradeck's parsers, watchdogs and checkpoint discovery see the real shapes.

Run it like kohya's script::

    python toy_lora.py --config_file toy.toml

It needs torch, numpy, pillow and safetensors, and its four helper modules beside it:
``toy_config.py`` (the config), ``toy_console.py`` (bar and log lines), ``toy_data.py``
(drawn images, captions, prompt files) and ``toy_model.py`` (generator, LoRA, AdamW).

The model
    A small *frozen* "image generator": a caption becomes a slot-wise bag of words over
    a tiny vocabulary (colour, shape, position, size, background colour), a linear
    "text encoder" embeds it, and an MLP "decoder" turns that into a 32x32 RGB image.
    The frozen weights are random, drawn from a fixed seed (the same base for every
    job, as a downloaded checkpoint would be). LoRA adapters (rank ``network_dim``,
    scale ``network_alpha / network_dim``, ``lora_down`` Kaiming-initialised and
    ``lora_up`` zero-initialised as kohya does) on its four linear layers are trained
    with AdamW (torch's update rule) and an MSE loss to reproduce procedurally drawn
    images (coloured shapes on plain backgrounds) from their captions. The data set and
    the validation set are also fixed; ``seed`` only changes the adapters'
    initialisation and the shuffling, and a run is deterministic given it. The loss
    falls over a run and depends on the rank and the learning rate.

Config keys (a kohya-style TOML; nested tables are flattened, as kohya does; an
unknown key is an error)
    ``learning_rate``, ``network_dim``, ``network_alpha``, ``train_batch_size``,
    ``gradient_accumulation_steps``, ``max_train_epochs`` (wins over
    ``max_train_steps``, as in kohya), ``max_train_steps``, ``output_dir``,
    ``output_name``, ``seed``, ``sample_prompts``, ``sample_every_n_epochs``,
    ``sample_every_n_steps``, ``sample_at_first``, ``save_every_n_epochs``,
    ``save_every_n_steps``, ``dataset_size`` (images drawn, validation included) and
    ``validation_split`` (the fraction held out). Test hooks: ``nan_at_step`` (the loss
    is multiplied by NaN from that optimiser step on, so the adapters really diverge),
    ``oom_at_step`` (raises ``torch.OutOfMemoryError`` with CUDA's message: a
    traceback on stderr and exit status 1), ``sleep_per_step`` (seconds, to stretch a
    run) and ``hang_at_step`` (stops printing and sleeps forever).

Paths
    A relative ``sample_prompts`` or ``output_dir`` is looked up next to the config file
    first, then in the current directory (loradeck runs the job in the batch file's
    folder but hands it a copy of the config kept elsewhere). Without ``output_dir`` the
    job writes to ``$LORADECK_OUTPUT_DIR``.

What it prints (as kohya does; the exact forms a parser can match)
    - rich-style log lines on stderr, wrapped to the terminal width (80 columns when
      not a terminal), the time omitted when it repeats::

        2026-11-28 11:57:32 INFO     Loading settings from toy.toml...  toy_lora.py:412

      including ``epoch is incremented. current_epoch: 1, epoch: 2``,
      ``generating sample images at step / サンプル画像生成 ステップ: N`` and
      ``model saved.``.
    - on stdout (real tqdm defaults to stderr; a terminal or tmux pane shows both the
      same), a tqdm-shaped bar redrawn with ``\\r`` after every optimiser step::

        steps:  45%|████▌     | 450/1000 [05:01<06:08,  1.49it/s, avr_loss=0.0812]

      ``avr_loss`` is kohya's moving average over the last epoch's worth of steps;
      NaN shows as ``avr_loss=nan``.
    - ``\\nepoch 2/3\\n`` (blank lines around) at the start of each epoch;
    - the validation loss once per epoch, as kohya's validation bar (ended by ``\\n``);
    - ``saving checkpoint: {output_dir}/{output_name}-{epoch:06d}.safetensors`` for
      every ``save_every_n_epochs`` epoch except the last (kohya saves the last one as
      the final model), then ``saving checkpoint: {output_dir}/{output_name}.safetensors``
      and the log line ``model saved.``.

The validation bar, the line to match for a validation loss::

    epoch validation steps: 100%|██████████| 4/4 [00:00<00:00, 85.10it/s, val_epoch_avg_loss=0.012]

What it writes
    Checkpoints as above, with kohya's tensor names (``lora_unet_fc1.lora_down.weight``,
    ``.lora_up.weight``, ``.alpha``) and ``ss_*`` metadata; one PNG per prompt of
    ``sample_prompts`` (kohya's prompt file: ``--n --w --h --d --l --s --ss``; the toy
    uses only the prompt, ``--w``/``--h`` and the seed in the name) in
    ``{output_dir}/sample/{output_name}_e{epoch:06d}_{idx:02d}_{YYYYmmddHHMMSS}_{seed}.png``
    (``_{step:06d}_`` instead of ``_e{epoch:06d}_`` for step samples; no ``_{seed}``
    without ``--d``).

Exit status: 0 on success, 1 on an uncaught error (the OOM hook), 2 on a bad config.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from toy_config import ConfigError, TrainerConfig, load_config
from toy_console import ProgressBar, RichLog
from toy_data import (
    SamplePrompt,
    ToyDataset,
    encode_captions,
    read_sample_prompts,
    to_png,
)
from toy_model import AdamW, LoraNetwork, ToyGenerator, lora_state_dict

BASE_MODEL_SEED = 20240601
"""Seed of the frozen base: the same "pretrained" generator for every job."""
DATASET_SEED = 7
"""Seed of the drawn images: the same data for every job, so runs compare."""


class LossRecorder:
    """kohya's LossRecorder: the mean of the last epoch's worth of step losses."""

    def __init__(self) -> None:
        self._losses: list[float] = []
        self._total = 0.0

    def add(self, *, epoch: int, step: int, loss: float) -> None:
        """Record the loss of batch ``step`` of ``epoch``, replacing last epoch's."""
        if epoch == 0 or step >= len(self._losses):
            self._losses.append(loss)
        else:
            self._total -= self._losses[step]
            self._losses[step] = loss
        self._total += loss

    @property
    def moving_average(self) -> float:
        return self._total / len(self._losses) if self._losses else float("nan")


class ToyTrainer:
    """One training run: data, frozen generator, adapters, loop, saves and samples."""

    def __init__(self, config: TrainerConfig, log: RichLog) -> None:
        self.config = config
        self.log = log
        self.global_step = 0
        self.prompts: list[SamplePrompt] = []
        if config.sample_prompts is not None:
            try:
                self.prompts = read_sample_prompts(config.sample_prompts)
            except (OSError, UnicodeDecodeError) as err:
                raise ConfigError(
                    f"{config.config_file}: sample_prompts: cannot read "
                    f"{config.sample_prompts} ({err}); give a UTF-8 .txt prompt file"
                ) from err

        self.data = ToyDataset(
            size=config.dataset_size, validation_split=config.validation_split, seed=DATASET_SEED
        )
        self.generator = ToyGenerator(seed=BASE_MODEL_SEED)
        torch.manual_seed(config.seed)
        self.network = LoraNetwork(
            self.generator, rank=config.network_dim, alpha=config.network_alpha
        )
        log.info(
            f"create LoRA network. base dim (rank): {config.network_dim}, "
            f"alpha: {config.network_alpha}"
        )
        log.info(f"create LoRA for Text Encoder: {self.network.text_encoder_modules} modules.")
        log.info(f"create LoRA for U-Net: {self.network.unet_modules} modules.")
        self.optimizer = AdamW(self.network.trainable_parameters(), lr=config.learning_rate)
        self.shuffle = torch.Generator().manual_seed(config.seed)

        batches = math.ceil(len(self.data.train_captions) / config.train_batch_size)
        self.batches_per_epoch = batches
        self.steps_per_epoch = math.ceil(batches / config.gradient_accumulation_steps)
        if config.max_train_epochs is not None:
            self.max_steps = config.max_train_epochs * self.steps_per_epoch
        else:
            self.max_steps = config.max_train_steps
        self.num_epochs = math.ceil(self.max_steps / self.steps_per_epoch)

    # ------------------------------------------------------------------ loop
    def train(self) -> None:
        config, log = self.config, self.log
        log.info("running training / 学習開始")
        log.info(
            f"  num train images * repeats / 学習画像の数×繰り返し回数: {self.data.train_size}"
        )
        log.info(
            f"  num validation images * repeats / 学習画像の数×繰り返し回数: "
            f"{self.data.validation_size}"
        )
        log.info(f"  num batches per epoch / 1epochのバッチ数: {self.batches_per_epoch}")
        log.info(f"  num epochs / epoch数: {self.num_epochs}")
        log.info(f"  batch size per device / バッチサイズ: {config.train_batch_size}")
        log.info(
            "  gradient accumulation steps / 勾配を合計するステップ数 = "
            f"{config.gradient_accumulation_steps}"
        )
        log.info(f"  total optimization steps / 学習ステップ数: {self.max_steps}")

        bar = ProgressBar("steps", total=self.max_steps, stream=sys.stdout)
        if config.sample_at_first:
            self.sample_images(epoch=0)
        recorder = LossRecorder()
        for epoch in range(self.num_epochs):
            print(f"\nepoch {epoch + 1}/{self.num_epochs}\n", flush=True)
            log.info(f"epoch is incremented. current_epoch: {epoch}, epoch: {epoch + 1}")
            self._train_epoch(epoch, bar, recorder)
            if self.data.validation_size:
                self.validate()
            last_epoch = epoch + 1 == self.num_epochs
            every = config.save_every_n_epochs
            if every and (epoch + 1) % every == 0 and not last_epoch:
                self.save(self._epoch_ckpt_name(epoch + 1), epoch=epoch + 1)
            every = config.sample_every_n_epochs
            if every and (epoch + 1) % every == 0:
                self.sample_images(epoch=epoch + 1)
            if self.global_step >= self.max_steps:
                break
        self.save(f"{config.output_name or 'last'}.safetensors", epoch=self.num_epochs)
        bar.close()
        log.info("model saved.")

    def _train_epoch(self, epoch: int, bar: ProgressBar, recorder: LossRecorder) -> None:
        config = self.config
        images = self.data.train_images
        embeds = self.data.train_embeddings
        order = torch.randperm(len(images), generator=self.shuffle)
        accum = config.gradient_accumulation_steps
        self.network.train()
        for batch_index in range(self.batches_per_epoch):
            step_number = self.global_step + 1
            if config.oom_at_step is not None and step_number >= config.oom_at_step:
                raise_fake_oom()
            if config.hang_at_step is not None and step_number >= config.hang_at_step:
                sys.stdout.flush()
                while True:  # the stall watchdog's test: alive, silent, no progress
                    time.sleep(3600)
            chosen = order[batch_index * config.train_batch_size :][: config.train_batch_size]
            prediction = self.network(embeds[chosen])
            loss = torch.nn.functional.mse_loss(prediction, images[chosen])
            if config.nan_at_step is not None and step_number >= config.nan_at_step:
                loss = loss * float("nan")  # a real divergence: the adapters turn NaN too
            torch.autograd.backward(loss / accum)  # Tensor.backward is untyped
            synced = (batch_index + 1) % accum == 0 or batch_index + 1 == self.batches_per_epoch
            if synced:
                self.optimizer.step()
                self.optimizer.zero_grad()
                self.global_step += 1
                if config.sleep_per_step:
                    time.sleep(config.sleep_per_step)
            recorder.add(epoch=epoch, step=batch_index, loss=float(loss.detach()))
            if synced:
                bar.update(1)
                bar.set_postfix(avr_loss=recorder.moving_average)
                every = config.save_every_n_steps
                if every and self.global_step % every == 0:
                    name = f"{config.output_name or 'at'}-step{self.global_step:08d}.safetensors"
                    self.save(name, epoch=epoch + 1)
                every = config.sample_every_n_steps
                if every and self.global_step % every == 0:
                    self.sample_images(epoch=None)
                if self.global_step >= self.max_steps:
                    return

    def validate(self) -> None:
        """kohya's per-epoch validation pass, shown as its own bar."""
        images = self.data.validation_images
        embeds = self.data.validation_embeddings
        size = self.config.train_batch_size
        total = math.ceil(len(images) / size)
        bar = ProgressBar("epoch validation steps", total=total, stream=sys.stdout)
        losses: list[float] = []
        self.network.eval()
        with torch.no_grad():
            for index in range(total):
                chosen = slice(index * size, (index + 1) * size)
                loss = torch.nn.functional.mse_loss(self.network(embeds[chosen]), images[chosen])
                losses.append(float(loss))
                bar.update(1)
                bar.set_postfix(val_epoch_avg_loss=sum(losses) / len(losses))
        bar.close()
        self.network.train()

    # ------------------------------------------------------------------ outputs
    def _epoch_ckpt_name(self, epoch: int) -> str:
        return f"{self.config.output_name or 'epoch'}-{epoch:06d}.safetensors"

    def save(self, name: str, *, epoch: int) -> None:
        config = self.config
        path = config.output_dir / name
        print(f"\nsaving checkpoint: {path}", flush=True)
        metadata = {
            "ss_network_module": "toy_lora",
            "ss_network_dim": str(config.network_dim),
            "ss_network_alpha": str(config.network_alpha),
            "ss_learning_rate": str(config.learning_rate),
            "ss_epoch": str(epoch),
            "ss_steps": str(self.global_step),
            "ss_seed": str(config.seed),
            "ss_output_name": config.output_name or "",
            "ss_base_model_version": "toy_generator_v1",
        }
        save_file(lora_state_dict(self.network), str(path), metadata=metadata)

    def sample_images(self, *, epoch: int | None) -> None:
        """One PNG per prompt, named as kohya names its samples."""
        if not self.prompts:
            return
        self.log.info(
            f"generating sample images at step / サンプル画像生成 ステップ: {self.global_step}"
        )
        folder = self.config.output_dir / "sample"
        folder.mkdir(parents=True, exist_ok=True)
        number = f"e{epoch:06d}" if epoch is not None else f"{self.global_step:06d}"
        prefix = f"{self.config.output_name}_" if self.config.output_name else ""
        self.network.eval()
        with torch.no_grad():
            pixels = self.network(encode_captions([p.prompt for p in self.prompts]))
        self.network.train()
        for index, prompt in enumerate(self.prompts):
            for line in prompt.describe():
                self.log.info(line)
            stamp = time.strftime("%Y%m%d%H%M%S", time.localtime())
            seed = f"_{prompt.seed}" if prompt.seed is not None else ""
            path = folder / f"{prefix}{number}_{index:02d}_{stamp}{seed}.png"
            to_png(pixels[index], width=prompt.width, height=prompt.height, path=path)


def raise_fake_oom() -> None:
    """What a CUDA out-of-memory looks like, raised for real so Python prints it."""
    raise torch.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
        "23.65 GiB of which 1.12 GiB is free. Including non-PyTorch memory, this process "
        "has 22.51 GiB memory in use. Of the allocated memory 20.83 GiB is allocated by "
        "PyTorch, and 1.21 GiB is reserved by PyTorch but unallocated. If reserved but "
        "unallocated memory is large try setting PYTORCH_CUDA_ALLOC_CONF="
        "expandable_segments:True to avoid fragmentation.  See documentation for Memory "
        "Management  (https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``--config_file``, train, and return the exit status."""
    parser = argparse.ArgumentParser(description="Toy LoRA trainer for the loradeck demo.")
    parser.add_argument("--config_file", required=True, help="kohya-style TOML config")
    args = parser.parse_args(argv)
    # One thread per job: the demo runs four of them on a two-core machine. One thread
    # also makes every CPU op deterministic (torch.use_deterministic_algorithms would
    # import torch's compiler stack: seconds of start-up for nothing here).
    torch.set_num_threads(1)
    log = RichLog(stream=sys.stderr)
    log.info(f"Loading settings from {args.config_file}...")
    try:
        config = load_config(Path(args.config_file), environ=os.environ)
        trainer = ToyTrainer(config, log)
    except ConfigError as err:
        print(f"toy_lora.py: error: {err}", file=sys.stderr)
        return 2
    config.output_dir.mkdir(parents=True, exist_ok=True)
    trainer.train()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The toy trainer's frozen generator and the LoRA adapters trained on it.

The generator is honest about what it is: fixed random weights (drawn from a fixed
seed, so every job adapts the same base), a linear "text encoder" and a three-layer
MLP "decoder" from caption embedding to a 32x32 RGB image. Its output is structured
noise until the adapters learn the drawn images.

Adapters follow kohya's LoRA: ``y = W x + (alpha / rank) * up(down(x))`` with
``down`` Kaiming-uniform and ``up`` zero at the start (so training starts from the
base model), named ``lora_te_*`` for the text encoder and ``lora_unet_*`` for the
decoder, saved with an ``.alpha`` tensor beside the two weights.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from toy_data import EMBED_DIM, IMAGE_SIZE

TEXT_WIDTH = 64
HIDDEN_WIDTHS = (256, 1024)
OUTPUT_WIDTH = 3 * IMAGE_SIZE * IMAGE_SIZE
_BASE_GAIN = 1.5
"""Spread of the frozen weights: enough that the base draws visible coloured noise."""


def _frozen_linear(fan_in: int, fan_out: int, generator: torch.Generator) -> nn.Linear:
    layer = nn.Linear(fan_in, fan_out)
    with torch.no_grad():
        layer.weight.normal_(0.0, _BASE_GAIN / math.sqrt(fan_in), generator=generator)
        layer.bias.normal_(0.0, 0.1, generator=generator)
    layer.requires_grad_(False)
    return layer


class ToyGenerator(nn.Module):
    """Caption embedding -> 32x32 RGB image (flat, channels first, 0..1). Frozen."""

    def __init__(self, *, seed: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        first, second = HIDDEN_WIDTHS
        self.text_proj = _frozen_linear(EMBED_DIM, TEXT_WIDTH, generator)
        self.fc1 = _frozen_linear(TEXT_WIDTH, first, generator)
        self.fc2 = _frozen_linear(first, second, generator)
        self.to_rgb = _frozen_linear(second, OUTPUT_WIDTH, generator)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return decode(self.text_proj, self.fc1, self.fc2, self.to_rgb, embeddings)


def decode(
    text_proj: nn.Module, fc1: nn.Module, fc2: nn.Module, to_rgb: nn.Module, x: torch.Tensor
) -> torch.Tensor:
    """The generator's forward pass over whichever layers (frozen or adapted) it is given."""
    hidden = nn.functional.gelu(fc1(text_proj(x)))
    hidden = nn.functional.gelu(fc2(hidden))
    return torch.sigmoid(to_rgb(hidden))


class LoraLinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update, as kohya's LoRAModule."""

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float, lora_name: str) -> None:
        super().__init__()
        self.base = base
        self.lora_name = lora_name
        self.alpha = alpha
        self.scale = alpha / rank
        self.lora_down = nn.Linear(base.in_features, rank, bias=False)
        self.lora_up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.base(x) + self.lora_up(self.lora_down(x)) * self.scale
        return out


class LoraNetwork(nn.Module):
    """The generator with an adapter on each of its four linear layers."""

    def __init__(self, generator: ToyGenerator, *, rank: int, alpha: float) -> None:
        super().__init__()
        self.text_proj = LoraLinear(
            generator.text_proj, rank=rank, alpha=alpha, lora_name="lora_te_text_proj"
        )
        self.fc1 = LoraLinear(generator.fc1, rank=rank, alpha=alpha, lora_name="lora_unet_fc1")
        self.fc2 = LoraLinear(generator.fc2, rank=rank, alpha=alpha, lora_name="lora_unet_fc2")
        self.to_rgb = LoraLinear(
            generator.to_rgb, rank=rank, alpha=alpha, lora_name="lora_unet_to_rgb"
        )

    @property
    def adapters(self) -> tuple[LoraLinear, ...]:
        return (self.text_proj, self.fc1, self.fc2, self.to_rgb)

    @property
    def text_encoder_modules(self) -> int:
        return sum(a.lora_name.startswith("lora_te_") for a in self.adapters)

    @property
    def unet_modules(self) -> int:
        return sum(a.lora_name.startswith("lora_unet_") for a in self.adapters)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The adapters' weights only: the base stays frozen."""
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return decode(self.text_proj, self.fc1, self.fc2, self.to_rgb, embeddings)


def lora_state_dict(network: LoraNetwork) -> dict[str, torch.Tensor]:
    """kohya's LoRA tensors: ``{name}.lora_down.weight``, ``.lora_up.weight``, ``.alpha``."""
    tensors: dict[str, torch.Tensor] = {}
    for adapter in network.adapters:
        name = adapter.lora_name
        tensors[f"{name}.lora_down.weight"] = adapter.lora_down.weight.detach().clone()
        tensors[f"{name}.lora_up.weight"] = adapter.lora_up.weight.detach().clone()
        tensors[f"{name}.alpha"] = torch.tensor(adapter.alpha)
    return tensors


class AdamW:
    """AdamW with torch.optim.AdamW's defaults and update rule, written out.

    torch.optim's optimisers import torch's compiler stack when they are built: seconds
    of start-up per job, which a demo of short jobs would spend mostly waiting.
    """

    def __init__(
        self,
        params: list[nn.Parameter],
        *,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        self.params = params
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weight_decay = weight_decay
        self.steps = 0
        self._first = [torch.zeros_like(p) for p in params]
        self._second = [torch.zeros_like(p) for p in params]

    def step(self) -> None:
        """One update from the parameters' accumulated gradients."""
        self.steps += 1
        beta1, beta2 = self.betas
        first_correction = 1 - beta1**self.steps
        second_correction_sqrt = math.sqrt(1 - beta2**self.steps)
        with torch.no_grad():
            for param, first, second in zip(self.params, self._first, self._second, strict=True):
                grad = param.grad
                if grad is None:
                    continue
                param.mul_(1 - self.lr * self.weight_decay)
                first.lerp_(grad, 1 - beta1)
                second.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denominator = (second.sqrt() / second_correction_sqrt).add_(self.eps)
                param.addcdiv_(first, denominator, value=-self.lr / first_correction)

    def zero_grad(self) -> None:
        """Forget the gradients (set to None, as torch's ``set_to_none=True``)."""
        for param in self.params:
            param.grad = None

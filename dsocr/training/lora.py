"""LoRA adapters for fine-tuning: low-rank updates on chosen linear layers, everything else frozen; merged back
into plain weights for saving, so a fine-tuned checkpoint has the official layout and loads with `--model`.

Must leave the model's parameter names unchanged once merged (`merged_state_dict`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

# The attention projections of the decoder (q/k/v/o_proj) and of the flow encoder (same names in Qwen2).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


class LoRALinear(nn.Module):
    """base(x) + (x A^T B^T) * alpha / rank, with A random and B zero: training starts from the base model."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, dtype=base.weight.dtype,
                                               device=base.weight.device))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, dtype=base.weight.dtype,
                                               device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scale

    def merged_weight(self) -> torch.Tensor:
        return self.base.weight + (self.lora_b @ self.lora_a).to(self.base.weight.dtype) * self.scale


def add_lora(model: nn.Module, rank: int, alpha: float | None = None,
             targets: Iterable[str] = DEFAULT_TARGETS, under: Iterable[str] = ("model.layers", "model.qwen2_model")
             ) -> list[str]:
    """Freeze the whole model, then wrap every nn.Linear named like `targets` below the `under` prefixes.
    Returns the wrapped modules' names."""
    targets, under = set(targets), tuple(under)
    model.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        child = name.rsplit(".", 1)[-1]
        if isinstance(module, nn.Linear) and child in targets and name.startswith(under):
            parent = model.get_submodule(name.rsplit(".", 1)[0])
            setattr(parent, child, LoRALinear(module, rank, alpha if alpha is not None else 2.0 * rank))
            wrapped.append(name)
    return wrapped


def merged_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict under the official names, each adapter folded into its base weight."""
    state = {}
    lora = {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    for key, value in model.state_dict().items():
        owner = next((n for n in lora if key.startswith(n + ".")), None)
        if owner is None:
            state[key] = value
        elif key == f"{owner}.base.weight":
            state[f"{owner}.weight"] = lora[owner].merged_weight().detach()
        elif key == f"{owner}.base.bias":
            state[f"{owner}.bias"] = value
    return state

"""Tiny configs and deterministic random checkpoints in the official layout, for tests and benchmarks.

Must not import pytest: benchmarks and the parity scripts use it too.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from dsocr.model.config import DeepseekOCR2Config, EncoderConfig, LanguageConfig, ProjectorConfig, SamConfig
from dsocr.model.decoder import DeepseekMoE
from dsocr.model.ocr import DeepseekOCR2ForCausalLM
from dsocr.model.weights import build_model, save_checkpoint


def tiny_config(*, vocab_size: int = 512) -> DeepseekOCR2Config:
    """Every component shrunk but structurally complete: window padding, global blocks, pos-embed and
    rel-pos resizing (crops are smaller than SAM's native size), GQA in the encoder, dense + MoE layers."""
    return DeepseekOCR2Config(
        language=LanguageConfig(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
            num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4, n_routed_experts=8,
            n_shared_experts=2, num_experts_per_tok=3, first_k_dense_replace=1, max_position_embeddings=2048,
        ),
        sam=SamConfig(image_size=192, patch_size=16, width=32, depth=3, num_heads=2, mlp_dim=64, window_size=5,
                      global_attn_indexes=(1,), neck_channels=16, downsample_channels=(24, 48)),
        encoder=EncoderConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              intermediate_size=96),
        projector=ProjectorConfig(input_dim=48, n_embed=64),
        base_size=192, crop_size=128, torch_dtype="float32",
    )


def randomize_(model: torch.nn.Module, seed: int) -> None:
    """Deterministic weights with non-zero biases and norm weights, so a dropped bias or norm would show.
    Drawn on the model's device (a full-size model on a GPU takes seconds, not minutes): the same seed gives
    the same weights on the same kind of device, whatever the dtype."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    for name, p in model.named_parameters():
        is_norm = "norm" in name or ".neck.1." in name or ".neck.3." in name
        if is_norm and name.endswith("weight"):
            value = 1.0 + 0.1 * torch.randn(p.shape, generator=gen, device=device)
        elif name.endswith("bias") or p.dim() == 1:
            value = 0.1 * torch.randn(p.shape, generator=gen, device=device)
        elif name.endswith("gate.weight"):
            value = torch.randn(p.shape, generator=gen, device=device) * 2.0 / math.sqrt(p.shape[-1])  # decisive routing
        elif p.dim() >= 2 and "embed" not in name and "query_" not in name and "rel_pos" not in name:
            value = torch.randn(p.shape, generator=gen, device=device) / math.sqrt(p[0].numel())
        else:
            value = 0.5 * torch.randn(p.shape, generator=gen, device=device)
        with torch.no_grad():
            p.copy_(value.to(p.dtype))


def random_model(config: DeepseekOCR2Config, *, seed: int = 0, dtype: torch.dtype = torch.float32,
                 device: str = "cpu") -> DeepseekOCR2ForCausalLM:
    model = build_model(config, device=device, dtype=dtype)
    randomize_(model, seed)
    return model.eval().requires_grad_(False)


def moe_layers(model: torch.nn.Module) -> list[DeepseekMoE]:
    """The decoder's MoE layers, in order."""
    return [m for m in model.modules() if isinstance(m, DeepseekMoE)]


def write_random_checkpoint(path: str | os.PathLike, config: DeepseekOCR2Config | None = None, *, seed: int = 0,
                            dtype: torch.dtype = torch.float32, max_shard_bytes: int | None = None,
                            tokenizer: bool = True, device: str = "cpu") -> Path:
    """A complete model directory: config.json, safetensors (+ index) under official names, tokenizer.json.
    `device` is where the weights are drawn (see `randomize_`)."""
    config = config or tiny_config()
    path = Path(path)
    model = random_model(config, seed=seed, dtype=dtype, device=device)
    save_checkpoint(model, path, dtype=dtype, max_shard_bytes=max_shard_bytes)
    if tokenizer:
        from dsocr.testing.tokenizer import build_test_tokenizer

        build_test_tokenizer(path / "tokenizer.json", vocab_size=min(config.language.vocab_size, 400))
    return path

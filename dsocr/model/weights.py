"""Checkpoint I/O in the official Hugging Face layout: config.json + (sharded) safetensors by exact name.

Must not resolve hub ids or download anything (that is dsocr.hub); it reads and writes local directories.

Loading builds the model on the meta device and then materialises each parameter straight from the
memory-mapped file in the requested dtype, so the 3.4B model never exists twice in memory. Before a single
tensor is read, every name and shape is checked against the model and a WeightMismatchError lists what is
missing, unexpected or mis-shaped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from dsocr.errors import CheckpointError, CheckpointNotFoundError, WeightMismatchError
from dsocr.hub import INDEX_FILE, list_checkpoint_files
from dsocr.model.config import DeepseekOCR2Config
from dsocr.model.ocr import DeepseekOCR2ForCausalLM


def read_tensor_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape from the safetensors headers only (no tensor data is read)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for shard in list_checkpoint_files(model_dir):
        with _open(shard) as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    return shapes


def read_config(model_dir: Path) -> DeepseekOCR2Config:
    path = model_dir / "config.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise CheckpointNotFoundError(f"{model_dir}: config.json is missing") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from e
    return DeepseekOCR2Config.from_hf(raw, read_tensor_shapes(model_dir))


def build_model(config: DeepseekOCR2Config, *, device: torch.device | str = "meta",
                dtype: torch.dtype = torch.float32) -> DeepseekOCR2ForCausalLM:
    """Construct without initialising weights when device is meta (the default)."""
    with torch.device(device):
        model = DeepseekOCR2ForCausalLM(config)
    return model.to(dtype) if str(device) != "meta" else model


def load_model(model_dir: str | os.PathLike, *, device: torch.device | str = "cpu",
               dtype: torch.dtype = torch.float32) -> DeepseekOCR2ForCausalLM:
    """Load an official-layout checkpoint strictly by name into a model in eval mode."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    model = build_model(config)
    load_weights(model, model_dir, device=device, dtype=dtype)
    return model.eval().requires_grad_(False)


def load_weights(model: nn.Module, model_dir: Path, *, device: torch.device | str,
                 dtype: torch.dtype) -> None:
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    found = read_tensor_shapes(model_dir)
    check_names(expected, found)
    for shard in list_checkpoint_files(model_dir):
        with _open(shard) as f:
            for name in f.keys():
                tensor = f.get_tensor(name).to(device=device, dtype=dtype)
                _assign(model, name, tensor)


def check_names(expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]]) -> None:
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = [(n, found[n], expected[n]) for n in sorted(set(expected) & set(found)) if found[n] != expected[n]]
    if missing or unexpected or mismatched:
        raise WeightMismatchError(missing, unexpected, mismatched)


def _assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_path, _, attr = name.rpartition(".")
    module = model.get_submodule(module_path)
    setattr(module, attr, nn.Parameter(tensor, requires_grad=False))


def _open(shard: Path):
    try:
        return safe_open(str(shard), framework="pt")
    except Exception as e:  # safetensors raises its own SafetensorError / OSError types
        raise CheckpointError(f"{shard}: cannot read safetensors file ({e})") from e


def save_checkpoint(model: DeepseekOCR2ForCausalLM, model_dir: str | os.PathLike, *,
                    dtype: torch.dtype | None = None, max_shard_bytes: int | None = None,
                    state: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write config.json + safetensors (+ index) in the official layout; `state_dict()` names are official.
    `state` replaces the model's state dict (training merges LoRA adapters into it first)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    source = model.state_dict() if state is None else state
    state = {n: (t.to(dtype) if dtype else t).detach().contiguous().cpu() for n, t in source.items()}
    shards = list(_split(state, max_shard_bytes))
    weight_map: dict[str, str] = {}
    for i, shard in enumerate(shards, start=1):
        file = f"model-{i:05d}-of-{len(shards):06d}.safetensors"
        _atomic_save(shard, model_dir / file)
        weight_map.update(dict.fromkeys(shard, file))
    total = sum(t.numel() * t.element_size() for t in state.values())
    _atomic_write(model_dir / INDEX_FILE, json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map},
                                                     indent=2))
    config = model.config.to_hf()
    config["torch_dtype"] = str(dtype or next(iter(state.values())).dtype).removeprefix("torch.")
    _atomic_write(model_dir / "config.json", json.dumps(config, indent=2))
    return model_dir


def _split(state: dict[str, torch.Tensor], max_bytes: int | None) -> Iterator[dict[str, torch.Tensor]]:
    shard: dict[str, torch.Tensor] = {}
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shard and max_bytes and size + nbytes > max_bytes:
            yield shard
            shard, size = {}, 0
        shard[name] = t
        size += nbytes
    if shard:
        yield shard


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)

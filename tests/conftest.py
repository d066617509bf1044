"""Shared fixtures: tiny deterministic checkpoints written under the official parameter names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dsocr.testing.fixtures import tiny_config, write_random_checkpoint


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete model directory (config.json, safetensors + index, tokenizer.json), float32."""
    return write_random_checkpoint(tmp_path_factory.mktemp("tiny") / "model", tiny_config(), seed=0)

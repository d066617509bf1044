"""scripts/window_sam.py: a checkpoint's global SAM layers become windowed ones that keep every in-window bias."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

from dsocr.model.weights import load_model

SCRIPT = Path(__file__).parents[2] / "scripts" / "window_sam.py"


def test_windowed_layers_keep_the_bias_inside_a_window(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "windowed"
    subprocess.run([sys.executable, str(SCRIPT), str(tiny_checkpoint), str(out)], check=True, capture_output=True)
    assert json.loads((out / "config.json").read_text())["vision_config"]["width"]["sam_vit_b"][
        "global_attn_indexes"] == []
    assert (out / "tokenizer.json").exists()
    before, after = load_model(tiny_checkpoint), load_model(out)  # loads strictly by name and shape
    (layer,) = before.config.sam.global_attn_indexes
    glob, windowed = before.model.sam_model.blocks[layer], after.model.sam_model.blocks[layer]
    assert glob.window == 0 and windowed.window == after.config.sam.window_size
    with torch.no_grad():  # rel-pos tables random, so a wrong slice cannot pass by accident
        glob.attn.rel_pos_h.normal_()
        glob.attn.rel_pos_w.normal_()
    # the same slicing through the script's function, on the randomised tables
    spec = importlib.util.spec_from_file_location("window_sam", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    windowed = script.window_layers(before, [layer]).model.sam_model.blocks[layer]
    grid, window = before.config.sam.grid_size, before.config.sam.window_size
    head_dim = glob.attn.rel_pos_h.shape[1]
    q = torch.randn(1, 1, grid * grid, head_dim)
    full = glob.attn._rel_pos_bias(q, grid, grid)[0, 0].reshape(grid, grid, grid, grid)
    top_left = q.reshape(1, 1, grid, grid, head_dim)[:, :, :window, :window].reshape(1, 1, -1, head_dim)
    inside = windowed.attn._rel_pos_bias(top_left, window, window)[0, 0].reshape(window, window, window, window)
    torch.testing.assert_close(inside, full[:window, :window, :window, :window])
    for name, tensor in after.state_dict().items():  # everything else carried over unchanged
        if "rel_pos" not in name:
            torch.testing.assert_close(tensor, before.state_dict()[name].to(tensor.dtype), rtol=1e-2, atol=1e-2)

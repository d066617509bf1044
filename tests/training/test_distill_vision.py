"""scripts/distill_vision.py: the reading loss it adds is training's loss, and a short run logs and saves."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import torch

from dsocr.model.weights import load_model
from dsocr.processing.image import normalize, processing_config_for_mode
from dsocr.processing.tokenizer import Tokenizer
from dsocr.training.data import collate, encode, strip_example
from dsocr.training.train import compute_loss

SCRIPT = Path(__file__).parents[2] / "scripts" / "distill_vision.py"


def load_script():
    spec = importlib.util.spec_from_file_location("distill_vision", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_the_reading_loss_of_given_embeddings_is_trainings_loss(tiny_checkpoint: Path) -> None:
    model = load_model(tiny_checkpoint)
    tokenizer = Tokenizer.from_file(tiny_checkpoint / "tokenizer.json")
    size = model.config.base_size
    processing = processing_config_for_mode("base", base_size=size)
    strips = [encode(strip_example(seed, size), tokenizer, processing, 64) for seed in (3, 4)]
    batch = collate(strips, tokenizer.pad_id)
    script = load_script()
    with torch.no_grad():
        pixels = torch.stack([normalize(s.global_pixels) for s in strips])
        # the strips as the second and third views of three: the rows pick their own embeddings
        embeds = model.model.encode_views(torch.cat([torch.zeros_like(pixels[:1]), pixels]))
        got = script.reading_loss(model, embeds, [1, 2], batch, tokenizer.image_id)
        expected = compute_loss(model, batch, tokenizer.image_id)
        wrong = script.reading_loss(model, embeds, [0, 1], batch, tokenizer.image_id)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(wrong, expected)


def test_a_short_run_logs_both_losses_and_saves_a_checkpoint(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    subprocess.run([sys.executable, str(SCRIPT), str(tiny_checkpoint), str(tiny_checkpoint), str(out),
                    "--steps", "2", "--batch", "4", "--workers", "0", "--token-weight", "1",
                    "--strips-per-page", "2", "--lr", "1e-3", "--warmup", "1"], check=True, capture_output=True)
    records = [json.loads(line) for line in (out / "distill_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    first = records[0]  # two strips, then the first page's views
    assert first["loss"] == 0.0 and first["reading"] == first["teacher_reading"] > 0  # the student starts as the teacher
    student = load_model(out, dtype=torch.float32)  # official layout (bf16 shards), loads by name
    teacher = {name: p.to(torch.bfloat16).float() for name, p in load_model(tiny_checkpoint).state_dict().items()}
    moved = {name.split(".")[1] for name, p in student.state_dict().items() if not torch.equal(p, teacher[name])}
    assert moved == {"sam_model", "qwen2_model", "projector"}  # the vision tower learnt, the decoder did not

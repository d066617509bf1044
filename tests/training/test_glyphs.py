"""Glyph supervision: the generator records where each character went, the targets put it in the view cell
that shows it (checked against the views `preprocess_image` really cuts), and the trainer's glyph loss
teaches the vision tower from scratch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dsocr.processing.image import crop_grid, preprocess_image, processing_config_for_mode
from dsocr.training.glyphs import (
    BLANK,
    CELL,
    NUM_CLASSES,
    SLOT,
    glyph_class,
    glyph_loss,
    glyph_targets,
    head_outputs,
    sam_outputs,
)
from dsocr.training.synthetic import SNIPPETS, SyntheticConfig, generate_page


def _inked_slots(view: torch.Tensor) -> set[tuple[int, int]]:
    """(cell, slot) pairs, both row-major, of a (3, S, S) uint8 view holding dark pixels."""
    dark = (view.min(dim=0).values < 100).numpy()
    n, per_side = view.shape[-1] // CELL, CELL // SLOT
    return {((y // CELL) * n + x // CELL, (y % CELL // SLOT) * per_side + x % CELL // SLOT)
            for y in range(0, view.shape[-1], SLOT) for x in range(0, view.shape[-1], SLOT)
            if dark[y:y + SLOT, x:x + SLOT].any()}


def _marked(classes: torch.Tensor, cls: int) -> set[tuple[int, int]]:
    return {(int(c), int(s)) for c, s in torch.nonzero(classes == cls)}


@pytest.mark.parametrize(("size", "mode"), [((1500, 1000), "gundam"), ((900, 2000), "gundam"),
                                             ((700, 500), "gundam"), ((900, 1300), "base")])
def test_a_glyph_lands_in_the_cell_of_each_view_that_shows_it(size: tuple[int, int], mode: str) -> None:
    processing = processing_config_for_mode(mode, base_size=640, crop_size=512)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, y = float(rng.uniform(20, size[0] - 20)), float(rng.uniform(20, size[1] - 20))
        image = Image.new("RGB", size, "white")
        image.paste((0, 0, 0), (round(x) - 5, round(y) - 5, round(x) + 5, round(y) + 5))  # a dot at the glyph
        inputs = preprocess_image(image, processing)
        targets = glyph_targets([("a", x, y)], [], size, processing)
        marked_global = _marked(targets.global_classes, glyph_class("a"))
        assert len(marked_global) == 1 and marked_global <= _inked_slots(inputs.global_pixels)
        assert targets.crop_classes.shape[0] == inputs.crop_pixels.shape[0]
        if crop_grid(*size, processing) is None:
            continue
        for crop, classes in zip(inputs.crop_pixels, targets.crop_classes):
            assert _marked(classes, glyph_class("a")) <= _inked_slots(crop)
        assert int((targets.crop_classes != BLANK).sum()) == 1  # the dot is in exactly one slot of one crop cell


def test_cells_over_a_formula_do_not_count_and_other_characters_share_one_class() -> None:
    processing = processing_config_for_mode("gundam", base_size=640, crop_size=512)
    targets = glyph_targets([("é", 20.0, 20.0)], [(0.0, 0.0, 300.0, 300.0)], (1000, 1400), processing)
    assert glyph_class("é") == glyph_class("∑") == NUM_CLASSES - 1 and glyph_class("!") == 0
    assert not targets.crop_known[0, 0] and targets.crop_known[-1, -1]
    assert (targets.crop_classes[0, 0] == NUM_CLASSES - 1).sum() == 1


@pytest.mark.parametrize("config", [SyntheticConfig(augment=0.0), SyntheticConfig(augment=1.0), SNIPPETS])
def test_recorded_glyphs_sit_on_ink(config: SyntheticConfig) -> None:
    for seed in range(4):
        page = generate_page(seed, config)
        dark = np.asarray(page.image.convert("L")) < 140
        text = page.plain_target()
        assert len(page.glyphs) >= 0.8 * sum(not ch.isspace() for ch in text if ch.isascii()) * 0.5
        on_ink = sum(dark[max(0, round(y) - 6):round(y) + 7, max(0, round(x) - 4):round(x) + 5].any()
                     for _, x, y in page.glyphs)
        assert on_ink >= 0.97 * len(page.glyphs), (seed, on_ink, len(page.glyphs))
        assert all(0 <= x <= page.image.width and 0 <= y <= page.image.height for _, x, y in page.glyphs)


@pytest.mark.parametrize("slots", [False, True])
def test_the_glyph_loss_reaches_the_vision_tower_through_the_hook(slots: bool) -> None:
    """SAM and the head trained on the glyph loss alone, as the trainer does (`sam_outputs` around the
    model's own forward), learn a batch's cells far past the best image-blind guess (each class's frequency,
    in the cells' bags or in each slot, over these very cells)."""
    from dsocr.model.weights import build_model
    from dsocr.processing.image import normalize
    from dsocr.testing.fixtures import tiny_config
    from dsocr.training.train import init_weights

    torch.manual_seed(0)
    model = build_model(tiny_config(vocab_size=64), device="cpu")
    init_weights(model, seed=0)
    head = torch.nn.Linear(model.config.sam.downsample_channels[1], head_outputs(slots))
    processing = processing_config_for_mode("base", base_size=model.config.base_size, crop_size=model.config.crop_size)
    pages = [generate_page(seed, SNIPPETS) for seed in range(4)]
    views = normalize(torch.stack([preprocess_image(p.image, processing).global_pixels for p in pages]))
    targets = [glyph_targets(p.glyphs, [], p.image.size, processing) for p in pages]
    classes = torch.stack([t.global_classes for t in targets])
    known = torch.stack([t.global_known for t in targets])
    optimizer = torch.optim.AdamW([*model.model.sam_model.parameters(), *head.parameters()], lr=3e-3)
    for _ in range(150):
        with sam_outputs(model) as features:
            model.model.encode_views(views)  # the flow encoder's output is not used: only SAM's counts
        loss = glyph_loss(head, features, [classes], [known], slots=slots)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    target = F.one_hot(classes.flatten(0, 1).long(), NUM_CLASSES + 1).double()  # (cells, SLOTS, classes)
    if slots:
        frequency = target.mean(0).clamp_min(1e-6)  # per slot
        blind = -(target * frequency.log()).sum() / len(target)
    else:
        bag = target[..., :NUM_CLASSES].amax(1)  # (cells, NUM_CLASSES)
        frequency = bag.mean(0, keepdim=True).clamp(1e-4, 1 - 1e-4).expand_as(bag)
        blind = F.binary_cross_entropy(frequency, bag, reduction="sum") / len(bag)
    assert loss.item() < 0.6 * blind.item(), (loss.item(), blind.item())


@pytest.mark.slow
def test_the_trainer_adds_the_glyph_and_alignment_losses_and_keeps_the_head_out_of_the_checkpoint(tmp_path: Path) -> None:
    from dsocr.model.weights import load_model
    from dsocr.training.train import TrainConfig, Trainer

    common = {"output_dir": tmp_path, "preset": "tiny", "batch_size": 2, "vocab_size": 400, "tokenizer_pages": 4,
              "eval_every": 1000, "eval_pages": 1, "eval_max_tokens": 8, "log_every": 2, "workers": 0,
              "mode": "base", "device": "cpu", "prompts": ("free",), "snippets": 1.0, "max_target_tokens": 32,
              "align_weight": 1.0}
    Trainer(TrainConfig(steps=4, save_every=4, **common)).train()  # from scratch: the glyph loss is on by default
    records = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "glyph_loss" in r] == [2, 4]
    assert [r["step"] for r in records if "align_loss" in r] == [2, 4]
    checks = [r for r in records if "tf_top1" in r]  # teacher_forced on held-out snippets at every save
    assert [r["step"] for r in checks] == [4] and 0 <= checks[0]["tf_top1"] <= 1
    assert checks[0]["tf_loss"] > 0 and checks[0]["tf_loss_other_image"] > 0
    state = torch.load(tmp_path / "trainer_state.pt", weights_only=False)
    resumed = Trainer(TrainConfig(steps=6, save_every=6, **common))
    assert resumed.step == 4
    torch.testing.assert_close(resumed.glyph_head.weight, state["glyph_head"]["weight"])
    resumed.train()
    assert load_model(tmp_path) is not None  # strict official names: no glyph head in the checkpoint
    off = Trainer(TrainConfig(steps=1, glyph_weight=0.0, **{**common, "output_dir": tmp_path / "off"}))
    assert off.glyph_head is None
    slots = Trainer(TrainConfig(steps=2, glyph_slots=True, **{**common, "output_dir": tmp_path / "slots",
                                                             "log_every": 1}))
    assert slots.glyph_head.out_features == head_outputs(True) != head_outputs(False)
    slots.train()
    logged = [json.loads(line) for line in (tmp_path / "slots" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "glyph_loss" in r] == [1, 2]

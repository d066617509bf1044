"""Evaluation of an OCR model on pages with known targets: character error rate and block boxes.

Must not train or change the model; it reads pages through `dsocr.api.OCR` exactly as users do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dsocr.generation.params import SamplingParams
from dsocr.output.grounding import parse_grounding
from dsocr.processing.image import ProcessingConfig, normalize, preprocess_image

BOX_IOU = 0.7  # a target block counts as found when a predicted block of its label overlaps it this much


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance, one numpy row at a time (insertions by a running minimum)."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    target = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    steps = np.arange(len(b) + 1)
    row = steps.copy()
    for ch in np.frombuffer(a.encode("utf-32-le"), dtype=np.uint32):
        diagonal = row[:-1] + (target != ch)  # substitute (or match)
        new = np.empty_like(row)
        new[0] = row[0] + 1
        new[1:] = np.minimum(diagonal, row[1:] + 1)  # ... or delete
        row = np.minimum.accumulate(new - steps) + steps  # ... or insert, left to right
    return int(row[-1])


def cer(prediction: str, reference: str) -> float:
    """Character error rate: edits over the reference's length (whitespace runs count as one space)."""
    prediction, reference = " ".join(prediction.split()), " ".join(reference.split())
    return edit_distance(prediction, reference) / max(1, len(reference))


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def boxes_found(predicted_text: str, reference_text: str, size: tuple[int, int]) -> tuple[int, int]:
    """(target blocks found, target blocks): found = a predicted block with the same label at IoU >= 0.7."""
    predicted = parse_grounding(predicted_text, size).blocks
    reference = parse_grounding(reference_text, size).blocks
    found = 0
    for block in reference:
        if any(p.label == block.label and p.boxes and block.boxes and iou(p.boxes[0], block.boxes[0]) >= BOX_IOU
               for p in predicted):
            found += 1
    return found, len(reference)


@dataclass(frozen=True, slots=True)
class EvalResult:
    pages: int
    cer: float  # over all pages: total edits / total reference characters (of the block contents)
    boxes_found: float  # share of target blocks found (grounding prompts only; nan otherwise)

    def to_dict(self) -> dict[str, float]:
        return {"pages": self.pages, "cer": self.cer, "boxes_found": self.boxes_found}


def evaluate(ocr, examples: Sequence, *, max_new_tokens: int = 2048, batch_size: int = 4) -> EvalResult:
    """Greedy OCR of `examples` (dsocr.training.data.Example) and their error against the targets."""
    sampling = SamplingParams(max_new_tokens=max_new_tokens)
    edits = chars = found = blocks = 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        prepared = [ocr.prepare(e.image, e.prompt) for e in chunk]
        for example, result in zip(chunk, ocr.run(prepared, sampling=sampling)):
            grounded = "<|det|>" in example.target
            if grounded:
                size = example.image.size
                predicted = "\n".join(b.content for b in parse_grounding(result.text, size).blocks)
                reference = "\n".join(b.content for b in parse_grounding(example.target, size).blocks)
                hit, total = boxes_found(result.text, example.target, size)
                found, blocks = found + hit, blocks + total
            else:
                predicted, reference = result.text, example.target
            reference = " ".join(reference.split())
            edits += edit_distance(" ".join(predicted.split()), reference)
            chars += max(1, len(reference))
    return EvalResult(len(examples), edits / max(1, chars), found / blocks if blocks else float("nan"))


@torch.no_grad()
def vision_spread(model, images: Sequence, processing: ProcessingConfig) -> float:
    """How much the visual embeddings of the images' global views differ from image to image, relative to their
    size (about 0.1 at initialisation). Near 0 the vision tower has collapsed to one constant vector and the
    model cannot read, whatever its loss says (it is reciting what it learnt by heart)."""
    if len(images) < 2:
        return float("nan")
    views = torch.stack([preprocess_image(image, processing).global_pixels for image in images])
    device = model.model.view_seperator.device
    embeds = model.model.encode_views(normalize(views.to(device))).flatten(1).float()
    return float((embeds - embeds.mean(0)).std() / embeds.abs().mean())

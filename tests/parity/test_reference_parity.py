"""dsocr against the official HF reference code, float32 on CPU, on one shared random checkpoint.

The reference's own outputs are produced outside the repository (its code is never committed; see
docs/parity.md) into a directory given by DSOCR_PARITY_DIR, holding `ckpt/` (written by `parity_config()` +
`write_random_checkpoint`), the test images `<case>.png`, our prompt ids `out_<case>.in.npz` and the reference's
tensors `out_<case>.npz`. Without that directory these tests are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dsocr.api import OCR
from dsocr.generation.params import SamplingParams
from dsocr.generation.reference import GenerationRequest, generate
from dsocr.model.config import DeepseekOCR2Config, LanguageConfig
from dsocr.processing.image import load_image, preprocess_image

PROMPT = "<image>\n<|grounding|>Convert the document to markdown."
PARITY_DIR = os.environ.get("DSOCR_PARITY_DIR")

pytestmark = [
    pytest.mark.parity,
    pytest.mark.skipif(not PARITY_DIR, reason="DSOCR_PARITY_DIR not set: reference outputs are produced locally, "
                                              "see docs/parity.md"),
]


def parity_config() -> DeepseekOCR2Config:
    """Full-size vision (the reference hard-codes it) and a small MoE decoder at hidden 1280 (the reference
    hard-codes the projector's n_embed)."""
    return DeepseekOCR2Config(
        language=LanguageConfig(vocab_size=1024, hidden_size=1280, intermediate_size=512, moe_intermediate_size=128,
                                num_hidden_layers=3, num_attention_heads=10, num_key_value_heads=10,
                                n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=3),
        torch_dtype="float32")


@pytest.fixture(scope="module")
def ocr() -> OCR:
    return OCR.from_pretrained(Path(PARITY_DIR) / "ckpt", device="cpu", dtype="float32", engine="reference")


@pytest.mark.parametrize("case", ["small", "page"])
def test_dsocr_matches_the_reference(ocr: OCR, case: str) -> None:
    root = Path(PARITY_DIR)
    ref = np.load(root / f"out_{case}.npz")
    inputs = preprocess_image(load_image(root / f"{case}.png"), ocr.processing_config("gundam"))
    prompt = ocr.tokenizer.encode_prompt(PROMPT, [inputs.num_image_tokens])
    assert prompt == np.load(root / f"out_{case}.in.npz")["prompt_ids"].tolist()

    assert list(inputs.grid) == ref["grid"].tolist()
    assert torch.equal(inputs.global_view[None], torch.from_numpy(ref["global_view"]))
    assert torch.equal(inputs.crops, torch.from_numpy(ref["crops"]))

    (visual,) = ocr._embed([inputs])
    torch.testing.assert_close(visual, torch.from_numpy(ref["visual"]), rtol=0, atol=1e-5)

    n = len(prompt)
    ids = torch.tensor([prompt])
    embeds = ocr.model.model.embed_inputs(ids, ids == ocr.tokenizer.image_id, [visual])
    with torch.inference_mode():
        logits = ocr.model(embeds, torch.arange(n)[None], torch.ones(n, n, dtype=torch.bool).tril()[None, None],
                           last_only=True)[0, -1]
    torch.testing.assert_close(logits, torch.from_numpy(ref["prefill_logits"]), rtol=0, atol=1e-4)

    # The HF infer() decoding: greedy, whole-sequence no-repeat 20-gram, stop at EOS.
    params = SamplingParams(max_new_tokens=len(ref["generated"]), ngram_size=0, no_repeat_ngram_size=20)
    (result,) = generate(ocr.model, [GenerationRequest(prompt_ids=prompt, image_embeds=[visual])], params,
                         image_token_id=ocr.tokenizer.image_id, eos_token_id=ocr.tokenizer.eos_id)
    assert result.token_ids == ref["generated"].tolist()

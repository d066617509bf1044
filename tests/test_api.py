from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from dsocr import OCR, OCRResult, SamplingParams, load
from dsocr.errors import ConfigError, InputError

GREEDY_SHORT = SamplingParams(max_new_tokens=12, ngram_size=0, ignore_eos=True)


@pytest.fixture(scope="module")
def ocr(tiny_checkpoint: Path) -> OCR:
    return load(tiny_checkpoint, device="cpu")


def _page(size: tuple[int, int], text: str = "Hello") -> Image.Image:
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).text((10, 10), text, fill="black")
    return img


def test_ocr_returns_a_result_with_tokens_timings_and_sizes(ocr: OCR) -> None:
    result = ocr.ocr(_page((300, 200)), "free", sampling=GREEDY_SHORT)
    assert isinstance(result, OCRResult)
    assert len(result.token_ids) == 12 and result.finish_reason == "length" and not result.is_finished
    assert result.image_size == (300, 200)
    assert result.num_image_tokens == 4 * 6 + 9 + 1  # (3, 2) grid of 128-crops + 192 global + separator
    assert set(result.timings) >= {"preprocess", "vision", "prefill", "decode"}
    assert any("unfinished" in w for w in result.warnings)
    assert result.text == ocr.tokenizer.decode(list(result.token_ids))


def test_batch_results_equal_single_results(ocr: OCR) -> None:
    pages = [_page((300, 200), "a"), _page((100, 90), "b"), _page((150, 400), "c")]
    batched = ocr.ocr_batch(pages, "markdown", sampling=GREEDY_SHORT)
    singles = [ocr.ocr(p, "markdown", sampling=GREEDY_SHORT) for p in pages]
    assert [r.token_ids for r in batched] == [r.token_ids for r in singles]
    assert [r.num_image_tokens for r in batched] == [34, 10, 22]


def test_streamed_text_concatenates_to_the_final_text(ocr: OCR) -> None:
    pieces: list[str] = []
    result = ocr.ocr(_page((120, 120)), sampling=GREEDY_SHORT, on_text=pieces.append)
    assert "".join(pieces) == result.text


def test_base_mode_uses_the_global_view_only(ocr: OCR) -> None:
    result = ocr.ocr(_page((300, 200)), mode="base", sampling=GREEDY_SHORT)
    assert result.num_image_tokens == 9 + 1


def test_modes_without_learned_queries_are_refused(ocr: OCR) -> None:
    with pytest.raises(ConfigError, match="tiny"):
        ocr.ocr(_page((300, 200)), mode="tiny")


def test_missing_image_raises_input_error(ocr: OCR, tmp_path: Path) -> None:
    with pytest.raises(InputError):
        ocr.ocr(tmp_path / "nope.png")


def test_locate_preset_puts_the_phrase_in_the_prompt(ocr: OCR) -> None:
    result = ocr.ocr(_page((120, 120)), "locate", locate_text="Hello", sampling=GREEDY_SHORT)
    expected = ocr.tokenizer.encode_prompt("<image>\nLocate <|ref|>Hello<|/ref|> in the image.", [10])
    assert result.prompt_tokens == len(expected)


def test_views_cut_on_the_device_give_the_same_tokens(ocr: OCR) -> None:
    pages = [_page((300, 200), "a"), _page((100, 90), "b")]
    eager = [ocr.prepare(p, "markdown", defer_views=False) for p in pages]
    deferred = [ocr.prepare(p, "markdown", defer_views=True) for p in pages]
    assert not hasattr(deferred[0].inputs, "crop_pixels")  # only the page's pixels were prepared
    assert [r.token_ids for r in ocr.run(deferred, sampling=GREEDY_SHORT)] == [
        r.token_ids for r in ocr.run(eager, sampling=GREEDY_SHORT)]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_views_are_cut_on_the_gpu_with_the_same_tokens(tiny_checkpoint: Path, ocr: OCR) -> None:
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    gpu = load(tiny_checkpoint, device="cuda", dtype="float32")
    page = _page((300, 200), "a")
    prepared = gpu.prepare(page, "markdown")
    assert not hasattr(prepared.inputs, "crop_pixels")  # deferred by default on CUDA
    (on_gpu,) = gpu.run([prepared], sampling=GREEDY_SHORT)
    assert on_gpu.token_ids == ocr.ocr(page, "markdown", sampling=GREEDY_SHORT).token_ids

"""Pillow-exact resizing in torch: every byte equal to Pillow's, and deferred views equal to eager ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from dsocr.processing.image import PAD_COLOR, ProcessingConfig, preprocess_image
from dsocr.processing.resample import pad, resize

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="needs CUDA"))]


def _random(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


@pytest.mark.parametrize("size, out", [
    ((122, 158), (153, 230)),  # up both ways (the crop grid of a page)
    ((122, 158), (79, 102)),  # down both ways (the global view)
    ((300, 90), (102, 31)),  # wide, down
    ((37, 401), (5, 40)),  # height shrinks more than twice the width: vertical pass first
    ((64, 64), (640, 64)),  # one pass only
    ((50, 50), (50, 50)),  # no pass
    ((13, 7), (400, 3)),
])
@pytest.mark.parametrize("device", DEVICES)
def test_resize_equals_pillow_byte_for_byte(size, out, device) -> None:
    array = _random(*size)
    expected = np.asarray(Image.fromarray(array).resize(out, Image.Resampling.BICUBIC))
    got = resize(_tensor(array).to(device), out).permute(1, 2, 0).cpu().numpy()
    assert got.dtype == np.uint8 and np.array_equal(got, expected)


@pytest.mark.parametrize("size", [(122, 158), (300, 90), (100, 100), (101, 99), (3, 200)])
@pytest.mark.parametrize("device", DEVICES)
def test_pad_equals_imageops_pad(size, device) -> None:
    array = _random(*size, seed=1)
    expected = np.asarray(ImageOps.pad(Image.fromarray(array), (128, 128), method=Image.Resampling.BICUBIC,
                                       color=PAD_COLOR, centering=(0.5, 0.5)))
    got = pad(_tensor(array).to(device), 128, PAD_COLOR).permute(1, 2, 0).cpu().numpy()
    assert np.array_equal(got, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_full_page_is_exact_on_the_gpu() -> None:
    """The official sizes: a 144 DPI letter page to 6 crops of 768 and the 1024 global view."""
    array = _random(1224, 1584, seed=3)
    image = Image.fromarray(array)
    pixels = _tensor(array).cuda()
    assert np.array_equal(resize(pixels, (1536, 2304)).permute(1, 2, 0).cpu().numpy(),
                          np.asarray(image.resize((1536, 2304), Image.Resampling.BICUBIC)))
    expected = ImageOps.pad(image, (1024, 1024), method=Image.Resampling.BICUBIC, color=PAD_COLOR)
    assert np.array_equal(pad(pixels, 1024, PAD_COLOR).permute(1, 2, 0).cpu().numpy(), np.asarray(expected))


@pytest.mark.parametrize("size", [(300, 200), (130, 500), (100, 90)])
@pytest.mark.parametrize("crop_mode", [True, False])
def test_deferred_views_equal_eager_views(size, crop_mode) -> None:
    config = ProcessingConfig(base_size=192, crop_size=128, crop_mode=crop_mode)
    image = Image.fromarray(_random(*size, seed=2))
    eager = preprocess_image(image, config)
    deferred = preprocess_image(image, config, defer=True)
    assert (deferred.num_image_tokens, deferred.num_crops, deferred.original_size) == (
        eager.num_image_tokens, eager.num_crops, eager.original_size)
    global_view, crops = deferred.views("cpu")
    assert torch.equal(global_view, eager.global_pixels) and torch.equal(crops, eager.crop_pixels)

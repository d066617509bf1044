"""Image preprocessing against the worked examples of the reference spec (section 6)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dsocr.errors import ConfigError, ImageDecodeError, InputError, UnsupportedFormatError
from dsocr.processing.image import (
    MODES,
    ProcessingConfig,
    candidate_grids,
    count_image_tokens,
    load_image,
    preprocess_image,
    processing_config_for_mode,
    resize_for_crops,
    select_grid,
    to_tensor,
)

OFFICIAL = ProcessingConfig()
TINY = ProcessingConfig(base_size=128, crop_size=64)
GREY = float((np.float32(127) / np.float32(255) - np.float32(0.5)) / np.float32(0.5))  # padding, normalised


def noise_image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def with_png_size(data: bytes, width: int, height: int) -> bytes:
    """The same PNG with a different size in its header (and a valid header checksum)."""
    assert data[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + data[24:29]
    return data[:16] + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + data[33:]


# --- grid selection -------------------------------------------------------------------------------


def test_candidate_grid_order_for_2_to_6_crops_matches_reference_set_order() -> None:
    assert candidate_grids(2, 6) == [(1, 2), (2, 1), (3, 1), (1, 3), (4, 1), (1, 4), (2, 2), (1, 5), (5, 1),
                                     (6, 1), (2, 3), (1, 6), (3, 2)]


def test_candidate_grid_order_for_2_to_9_crops_matches_reference_set_order() -> None:
    assert candidate_grids(2, 9) == [(1, 2), (2, 1), (3, 1), (1, 3), (2, 2), (4, 1), (1, 4), (5, 1), (1, 5),
                                     (1, 6), (6, 1), (3, 2), (2, 3), (7, 1), (1, 7), (4, 2), (2, 4), (1, 8),
                                     (8, 1), (1, 9), (3, 3), (9, 1)]


@pytest.mark.parametrize(("size", "grid", "tokens"), [
    ((1700, 2200), (2, 3), 1121),
    ((640, 480), (1, 1), 257),
    ((500, 1600), (1, 3), 689),
    ((3000, 900), (3, 1), 689),
    ((1000, 800), (2, 2), 833),
    ((1500, 1200), (3, 2), 1121),
    ((769, 500), (3, 2), 1121),
    ((1224, 1584), (2, 3), 1121),
    ((1191, 1684), (2, 3), 1121),
    ((768, 768), (1, 1), 257),
    ((769, 768), (2, 2), 833),
])
def test_crop_grid_and_token_count_match_the_spec_worked_examples(size: tuple[int, int],
                                                                  grid: tuple[int, int], tokens: int) -> None:
    width, height = size
    if grid != (1, 1):
        assert select_grid(width, height, min_crops=2, max_crops=6, crop_size=768) == grid
    assert count_image_tokens(width, height, OFFICIAL) == tokens


def test_exact_ratio_tie_goes_to_the_larger_grid_only_for_large_images() -> None:
    # a = 1.25 lies exactly between (2,2) and (3,2); area decides against 0.5 * 768^2 * 6 = 1,769,472.
    assert select_grid(1000, 800, min_crops=2, max_crops=6, crop_size=768) == (2, 2)
    assert select_grid(1500, 1200, min_crops=2, max_crops=6, crop_size=768) == (3, 2)


def test_v1_nine_crop_list_has_true_ties_resolved_by_area() -> None:
    assert select_grid(1400, 1400, min_crops=2, max_crops=9, crop_size=640) == (3, 3)
    assert select_grid(2000, 1000, min_crops=2, max_crops=9, crop_size=640) == (4, 2)
    assert select_grid(1000, 500, min_crops=2, max_crops=9, crop_size=640) == (2, 1)


# --- views ----------------------------------------------------------------------------------------


def test_crop_grid_matches_reference_for_1700x2200_page() -> None:
    image = noise_image(1700, 2200)
    inputs = preprocess_image(image, OFFICIAL)
    assert inputs.grid == (2, 3)
    assert inputs.num_image_tokens == 1121
    assert inputs.original_size == (1700, 2200)
    assert inputs.crops.shape == (6, 3, 768, 768)
    assert inputs.global_view.shape == (3, 1024, 1024)
    assert inputs.crops.dtype == inputs.global_view.dtype == torch.float32
    resized = resize_for_crops(image, 2, 3, 768)
    assert resized.size == (1536, 2304)
    for i, (x0, y0) in enumerate([(0, 0), (768, 0), (0, 768), (768, 768), (0, 1536), (768, 1536)]):
        region = resized.crop((x0, y0, x0 + 768, y0 + 768))
        assert torch.equal(inputs.crops[i], to_tensor(region)), f"crop {i}"


def test_global_view_of_1700x2200_page_keeps_content_in_columns_116_to_906() -> None:
    inputs = preprocess_image(Image.new("RGB", (1700, 2200), (255, 255, 255)), OFFICIAL)
    row = inputs.global_view[:, 512]
    assert torch.all(row[:, :116] == GREY) and torch.all(row[:, 907:] == GREY)
    assert torch.all(row[:, 116:907] == 1.0)


def test_global_view_of_3000x900_is_pasted_at_y_358_with_height_307() -> None:
    inputs = preprocess_image(Image.new("RGB", (3000, 900), (255, 255, 255)), OFFICIAL)
    assert inputs.grid == (3, 1) and inputs.num_image_tokens == 689
    column = inputs.global_view[:, :, 10]
    assert torch.all(column[:, :358] == GREY) and torch.all(column[:, 665:] == GREY)
    assert torch.all(column[:, 358:665] == 1.0)


def test_small_image_gets_no_crops_and_a_global_view_at_y_128() -> None:
    inputs = preprocess_image(Image.new("RGB", (640, 480), (0, 0, 0)), OFFICIAL)
    assert inputs.grid == (1, 1)
    assert inputs.crops.shape == (0, 3, 768, 768)
    assert inputs.num_image_tokens == 257
    column = inputs.global_view[:, :, 500]
    assert torch.all(column[:, :128] == GREY) and torch.all(column[:, 896:] == GREY)
    assert torch.all(column[:, 128:896] == -1.0)


def test_grey_padding_normalises_to_minus_0_0039216() -> None:
    inputs = preprocess_image(Image.new("RGB", (100, 50)), TINY)
    corner = inputs.global_view[:, 0, 0]
    assert torch.allclose(corner, torch.full((3,), -0.0039216), atol=1e-7)


def test_normalisation_is_three_float32_steps_like_torchvision() -> None:
    values = np.arange(256, dtype=np.uint8)
    image = Image.fromarray(np.stack([values] * 3, axis=-1)[None], "RGB")  # 256 x 1
    expected = (values.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
    tensor = to_tensor(image)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 1, 256)
    assert np.array_equal(tensor[0, 0].numpy(), expected)
    assert tensor[0, 0, 0] == -1.0 and tensor[0, 0, 255] == 1.0


def test_tiny_views_for_test_models_use_the_configured_sizes() -> None:
    assert (TINY.tokens_per_view(128), TINY.tokens_per_view(64)) == (4, 1)
    inputs = preprocess_image(noise_image(200, 100), TINY)
    assert inputs.grid == (2, 1)
    assert inputs.crops.shape == (2, 3, 64, 64)
    assert inputs.global_view.shape == (3, 128, 128)
    assert inputs.num_image_tokens == 2 * 1 + 4 + 1


@pytest.mark.parametrize("size", [(1, 1), (64, 64), (65, 64), (64, 65), (1, 400), (400, 1), (97, 131),
                                  (300, 190)])
def test_token_count_agrees_with_preprocessed_views(size: tuple[int, int]) -> None:
    for config in (TINY, ProcessingConfig(base_size=128, crop_size=64, crop_mode=False),
                   ProcessingConfig(base_size=128, crop_size=64, min_crops=1, max_crops=4)):
        inputs = preprocess_image(noise_image(*size), config)
        expected = inputs.crops.shape[0] * config.tokens_per_view(64) + config.tokens_per_view(128) + 1
        assert inputs.num_image_tokens == expected == count_image_tokens(*size, config)
        assert inputs.crops.shape[0] == (inputs.grid[0] * inputs.grid[1] if inputs.crops.shape[0] else 0)


def test_base_mode_is_the_global_view_alone() -> None:
    image = noise_image(1700, 2200)
    base = preprocess_image(image, processing_config_for_mode("base"))
    assert base.crops.shape == (0, 3, 768, 768)
    assert base.grid == (1, 1) and base.num_image_tokens == 257
    assert torch.equal(base.global_view, preprocess_image(image, OFFICIAL).global_view)


def test_base_mode_with_a_view_no_larger_than_a_crop_squashes_to_a_square_first() -> None:
    image = noise_image(300, 150)
    config = ProcessingConfig(base_size=64, crop_size=64, crop_mode=False)
    inputs = preprocess_image(image, config)
    assert torch.equal(inputs.global_view, to_tensor(image.resize((64, 64), Image.Resampling.BICUBIC)))


def test_non_rgb_images_are_converted_before_preprocessing() -> None:
    inputs = preprocess_image(Image.new("L", (100, 100), 255), TINY)
    assert inputs.global_view.shape == (3, 128, 128)
    assert torch.all(inputs.global_view == 1.0)


def test_empty_image_is_an_input_error() -> None:
    with pytest.raises(InputError, match="no pixels"):
        preprocess_image(Image.new("RGB", (0, 5)), TINY)


# --- config and modes -----------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"base_size": 1000}, "base_size"),
    ({"crop_size": 0}, "crop_size"),
    ({"downsample": 0}, "downsample"),
    ({"min_crops": 0}, "min_crops"),
    ({"min_crops": 4, "max_crops": 3}, "max_crops"),
    ({"max_image_pixels": 0}, "max_image_pixels"),
])
def test_invalid_processing_config_names_the_field(kwargs: dict[str, int], field: str) -> None:
    with pytest.raises(ConfigError, match=f"^{field}:"):
        ProcessingConfig(**kwargs)


def test_gundam_is_crops_plus_global_and_base_is_global_only() -> None:
    assert set(MODES) == {"gundam", "base"}
    assert processing_config_for_mode("gundam") == ProcessingConfig()
    assert processing_config_for_mode("base").crop_mode is False
    custom = processing_config_for_mode("gundam", base_size=192, crop_size=128, min_crops=1, max_crops=4)
    assert (custom.base_size, custom.crop_size, custom.min_crops, custom.max_crops) == (192, 128, 1, 4)


@pytest.mark.parametrize("mode", ["tiny", "small", "large"])
def test_v1_single_view_modes_are_refused_with_an_explanation(mode: str) -> None:
    with pytest.raises(ConfigError, match="learned queries") as info:
        processing_config_for_mode(mode)
    assert "DeepSeek-OCR" in str(info.value) and "v1" in str(info.value)


def test_unknown_mode_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="gundam, base"):
        processing_config_for_mode("huge")


# --- loading --------------------------------------------------------------------------------------


def quadrants(width: int = 64, height: int = 32) -> Image.Image:
    """Red, green / blue, white quadrants: every rotation and mirror looks different."""
    image = Image.new("RGB", (width, height), (255, 255, 255))
    image.paste((255, 0, 0), (0, 0, width // 2, height // 2))
    image.paste((0, 255, 0), (width // 2, 0, width, height // 2))
    image.paste((0, 0, 255), (0, height // 2, width // 2, height))
    return image


# Transform that produces the stored pixels from the upright image, per EXIF orientation (6 and 8 swap).
STORED_FROM_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_exif_orientation_is_applied(tmp_path: Path, orientation: int) -> None:
    upright = quadrants()
    stored = upright.transpose(STORED_FROM_UPRIGHT[orientation]) if orientation > 1 else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "photo.jpg"
    stored.save(path, format="JPEG", quality=95, exif=exif.tobytes())
    loaded = load_image(path)
    assert loaded.mode == "RGB" and loaded.size == (64, 32)
    for (x, y), colour in {(16, 8): (255, 0, 0), (48, 8): (0, 255, 0), (16, 24): (0, 0, 255),
                           (48, 24): (255, 255, 255)}.items():
        assert np.abs(np.subtract(loaded.getpixel((x, y)), colour)).max() < 16, (orientation, x, y)


def test_load_image_accepts_paths_bytes_and_pil_images(tmp_path: Path) -> None:
    image = noise_image(20, 10)
    path = tmp_path / "page.png"
    image.save(path)
    for source in (path, str(path), path.read_bytes(), image):
        loaded = load_image(source)
        assert loaded.mode == "RGB" and np.array_equal(np.asarray(loaded), np.asarray(image))


def test_alpha_is_dropped_without_compositing() -> None:
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert load_image(png_bytes(rgba)).getpixel((0, 0)) == (10, 20, 30)


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert load_image(buffer.getvalue()).getpixel((4, 4)) == (255, 0, 0)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path / "absent.png")


def test_directory_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a file"):
        load_image(tmp_path)


def test_non_image_file_is_an_unsupported_format(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("just some text, not pixels")
    with pytest.raises(UnsupportedFormatError):
        load_image(path)
    with pytest.raises(UnsupportedFormatError):
        load_image(b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image_is_a_decode_error(fmt: str) -> None:
    buffer = io.BytesIO()
    noise_image(64, 64).save(buffer, format=fmt)
    data = buffer.getvalue()
    with pytest.raises(ImageDecodeError):
        load_image(data[: len(data) // 2])


def test_unsupported_source_type_is_an_input_error() -> None:
    with pytest.raises(InputError):
        load_image(42)  # type: ignore[arg-type]


def test_image_over_the_pixel_limit_is_refused_before_decoding() -> None:
    before = Image.MAX_IMAGE_PIXELS
    data = png_bytes(noise_image(20, 20))
    with pytest.raises(InputError, match="too large"):
        load_image(data, max_pixels=399)
    assert load_image(data, max_pixels=400).size == (20, 20)
    # A header claiming 60000 x 60000 is refused from the header alone.
    with pytest.raises(InputError, match="too large"):
        load_image(with_png_size(data, 60_000, 60_000))
    assert before == Image.MAX_IMAGE_PIXELS  # the global guard is left alone


def test_our_pixel_limit_replaces_pillows_warning_threshold() -> None:
    # 10000 x 10000 exceeds Pillow's warning threshold but not our default limit; the pixel data is
    # missing, so it ends as a decode error rather than a warning (which pytest turns into an error).
    data = with_png_size(png_bytes(noise_image(20, 20)), 10_000, 10_000)
    with pytest.raises(ImageDecodeError):
        load_image(data)

"""Image preprocessing for DeepSeek-OCR 2: loading, crop decision, grid selection, views, token counts.

Must not import the model or know about tokens beyond their count; resampling is Pillow's, never torch's.

Reproduces the reference `dynamic_preprocess` + `ImageOps.pad` pipeline (spec section 6) bit for bit:
crops of `crop_size` in row-major order cut from a bicubic resize to (T*cols, T*rows), and one global
view of `base_size` padded with grey 127, each normalised in float32 as (v/255 - 0.5)/0.5.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from dsocr.errors import ConfigError, ImageDecodeError, InputError, UnsupportedFormatError

DEFAULT_MAX_IMAGE_PIXELS = 178_000_000  # just under Pillow's own hard refusal (2 x MAX_IMAGE_PIXELS)
PAD_COLOR = (127, 127, 127)  # int(0.5 * 255): the reference pads with the normalisation mean

MODES: Mapping[str, str] = {
    "gundam": "crops of crop_size plus one global view of base_size (default)",
    "base": "one global view of base_size, no crops",
}
# v1 (DeepSeek-OCR) single-view modes; v2 has learned queries only for the crop and global sizes.
V1_ONLY_MODES: Mapping[str, int] = {"tiny": 512, "small": 640, "large": 1280}


@dataclass(frozen=True, slots=True, kw_only=True)
class ProcessingConfig:
    """How an image becomes views. Defaults are the official DeepSeek-OCR 2 values."""

    base_size: int = 1024  # global view side
    crop_size: int = 768  # tile side
    crop_mode: bool = True  # False = global view only ("base" mode)
    min_crops: int = 2
    max_crops: int = 6
    downsample: int = 64  # pixels per visual token side: 16 (patch) * 4 (net_2, net_3)
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS  # decompression-bomb guard of load_image

    def __post_init__(self) -> None:
        if self.downsample < 1:
            raise ConfigError(f"downsample: must be >= 1, got {self.downsample}")
        for name in ("base_size", "crop_size"):
            size = getattr(self, name)
            if size <= 0 or size % self.downsample:
                raise ConfigError(f"{name}: {size} must be a positive multiple of downsample "
                                  f"({self.downsample})")
        if self.min_crops < 1:
            raise ConfigError(f"min_crops: must be >= 1, got {self.min_crops}")
        if self.max_crops < self.min_crops:
            raise ConfigError(f"max_crops: {self.max_crops} is smaller than min_crops ({self.min_crops})")
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            raise ConfigError(f"max_image_pixels: must be >= 1 or None, got {self.max_image_pixels}")

    def tokens_per_view(self, size: int) -> int:
        return (size // self.downsample) ** 2


@dataclass(frozen=True, slots=True, kw_only=True)
class ImageInputs:
    """The views of one image, ready for the vision encoder.

    Pixels are kept as uint8 (4x less memory and host-to-device traffic); `normalize` turns them into the
    model's float32 input on whatever device they are on. `global_view` and `crops` do that on the CPU.
    """

    global_pixels: torch.Tensor  # (3, B, B) uint8
    crop_pixels: torch.Tensor  # (k, 3, T, T) uint8, k = cols * rows; (0, 3, T, T) without crops
    grid: tuple[int, int]  # (cols, rows); (1, 1) without crops
    num_image_tokens: int  # crops + global + view separator
    original_size: tuple[int, int]  # (width, height) of the RGB image

    @property
    def num_crops(self) -> int:
        return self.crop_pixels.shape[0]

    @property
    def global_view(self) -> torch.Tensor:
        """(3, B, B) float32, normalised."""
        return normalize(self.global_pixels)

    @property
    def crops(self) -> torch.Tensor:
        """(k, 3, T, T) float32, normalised."""
        return normalize(self.crop_pixels)

    def views(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """(global view, crops) as uint8 on `device`."""
        return self.global_pixels.to(device), self.crop_pixels.to(device)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeferredImageInputs:
    """An image whose views are cut later, on the model's device (`views`), with Pillow-exact resizing
    (processing/resample.py): the CPU only converts the page to a uint8 tensor."""

    pixels: torch.Tensor  # (3, H, W) uint8, the whole RGB image
    config: ProcessingConfig
    grid: tuple[int, int]
    num_image_tokens: int
    original_size: tuple[int, int]

    @property
    def num_crops(self) -> int:
        return self.grid[0] * self.grid[1] if crop_grid(*self.original_size, self.config) else 0

    def views(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        from dsocr.processing import resample

        config, tile = self.config, self.config.crop_size
        pixels = self.pixels.to(device)
        side = config.base_size
        if not config.crop_mode and side <= config.crop_size:
            pixels_for_global = resample.resize(pixels, (side, side))  # see global_view()
        else:
            pixels_for_global = pixels
        global_pixels = resample.pad(pixels_for_global, side, PAD_COLOR)
        if not self.num_crops:
            return global_pixels, torch.empty((0, 3, tile, tile), dtype=torch.uint8, device=device)
        cols, rows = self.grid
        resized = resample.resize(pixels, (tile * cols, tile * rows))
        return global_pixels, _tiles(resized, cols, rows, tile)


def processing_config_for_mode(mode: str, *, base_size: int = 1024, crop_size: int = 768, min_crops: int = 2,
                               max_crops: int = 6) -> ProcessingConfig:
    """The config of a named resolution mode: "gundam" (crops + global) or "base" (global only)."""
    name = mode.strip().lower()
    if name in V1_ONLY_MODES:
        raise ConfigError(
            f"mode: {mode!r} ({V1_ONLY_MODES[name]}px single view) is not available for DeepSeek-OCR 2, "
            f"which only has learned queries for the crop ({crop_size}) and global ({base_size}) view sizes; "
            f"use 'gundam' or 'base' (the v1 model DeepSeek-OCR has the tiny/small/large modes)"
        )
    if name not in MODES:
        raise ConfigError(f"mode: unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    return ProcessingConfig(base_size=base_size, crop_size=crop_size, crop_mode=name == "gundam",
                            min_crops=min_crops, max_crops=max_crops)


# --- loading --------------------------------------------------------------------------------------


def load_image(source: str | os.PathLike | bytes | Image.Image, *,
               max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode an image file, bytes or PIL image into an EXIF-upright RGB image (first frame of animations)."""
    if isinstance(source, Image.Image):
        return decode_image(source, max_pixels=max_pixels, name="image")
    if isinstance(source, (bytes, bytearray, memoryview)):
        with open_image(io.BytesIO(bytes(source)), "bytes", max_pixels) as image:
            return decode_image(image, max_pixels=max_pixels, name="bytes")
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"cannot read an image from {type(source).__name__}")
    path = os.fspath(source)
    try:
        data = Path(path).read_bytes()  # read here, not by Pillow, to tell I/O errors from format errors
    except FileNotFoundError:
        raise InputError(f"no such file: {path}") from None
    except IsADirectoryError:
        raise InputError(f"not a file: {path}") from None
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from e
    with open_image(io.BytesIO(data), path, max_pixels) as image:
        return decode_image(image, max_pixels=max_pixels, name=path)


def open_image(file: io.BytesIO | str | os.PathLike, name: str, max_pixels: int | None) -> Image.Image:
    """Read the header only; pixel data is decoded later, after the size check (`decode_image`)."""
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:
                # Our own limit is enforced below; Pillow's lower default would only add noise.
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(file)
    except UnidentifiedImageError:
        raise UnsupportedFormatError(f"not an image in a format Pillow can read: {name}") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"image too large: {name}: {e}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageDecodeError(f"cannot decode {name}: {e}") from e


def decode_image(image: Image.Image, *, max_pixels: int | None, name: str) -> Image.Image:
    """The opened image (current frame) checked against `max_pixels`, decoded, EXIF-upright, RGB."""
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        raise InputError(f"image too large: {name} is {width}x{height} = {width * height:,} pixels, "
                         f"more than the limit of {max_pixels:,} (decompression-bomb guard)")
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError, IndexError) as e:  # Pillow's ways of saying "corrupt"
        raise ImageDecodeError(f"cannot decode {name}: {e}") from e
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - malformed EXIF fails in many ways; the reference keeps the raw image
        upright = image
    return upright.convert("RGB")


# --- grid selection and token counts --------------------------------------------------------------


def candidate_grids(min_crops: int, max_crops: int) -> list[tuple[int, int]]:
    """All (cols, rows) with min <= cols*rows <= max, in the reference's order.

    The reference de-duplicates through a Python set and then stably sorts by product, so the order
    within one product is CPython's set order; building the set the same way reproduces it, and ties
    in grid selection depend on it.
    """
    grids = {(i, j) for n in range(min_crops, max_crops + 1) for i in range(1, n + 1) for j in range(1, n + 1)
             if min_crops <= i * j <= max_crops}
    return sorted(grids, key=lambda grid: grid[0] * grid[1])


def select_grid(width: int, height: int, *, min_crops: int, max_crops: int,
                crop_size: int) -> tuple[int, int]:
    """The (cols, rows) grid with the aspect ratio closest to the image's (spec 6.3: float64, exact ties)."""
    aspect = width / height
    area = width * height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(min_crops, max_crops):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and area > 0.5 * crop_size * crop_size * cols * rows:
            best = (cols, rows)  # an exact tie goes to the larger grid only for large images
    return best


def crop_grid(width: int, height: int, config: ProcessingConfig) -> tuple[int, int] | None:
    """(cols, rows) of the crops this image gets, or None when it gets none (small image or no crop mode)."""
    if not config.crop_mode or (width <= config.crop_size and height <= config.crop_size):
        return None
    return select_grid(width, height, min_crops=config.min_crops, max_crops=config.max_crops,
                       crop_size=config.crop_size)


def count_image_tokens(width: int, height: int, config: ProcessingConfig) -> int:
    """Image tokens of a width x height image: crops + global view + 1 view separator."""
    _check_size(width, height)
    grid = crop_grid(width, height, config)
    num_crops = grid[0] * grid[1] if grid else 0
    return num_crops * config.tokens_per_view(config.crop_size) + config.tokens_per_view(config.base_size) + 1


def _check_size(width: int, height: int) -> None:
    if width < 1 or height < 1:
        raise InputError(f"image has no pixels: {width}x{height}")


# --- views ----------------------------------------------------------------------------------------


def preprocess_image(image: Image.Image, config: ProcessingConfig, *,
                     defer: bool = False) -> ImageInputs | DeferredImageInputs:
    """Views of one loaded image (see `load_image`) as uint8 tensors; with `defer`, only the page's pixels,
    the views being cut on the model's device later (same bytes)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    _check_size(width, height)
    tile = config.crop_size
    grid = crop_grid(width, height, config)
    if defer:
        return DeferredImageInputs(pixels=to_pixels(image), config=config, grid=grid or (1, 1),
                                   num_image_tokens=count_image_tokens(width, height, config),
                                   original_size=(width, height))
    if grid is None:
        crops = torch.empty((0, 3, tile, tile), dtype=torch.uint8)
    else:
        crops = _crop_views(image, *grid, tile)
    return ImageInputs(
        global_pixels=to_pixels(global_view(image, config)),
        crop_pixels=crops,
        grid=grid or (1, 1),
        num_image_tokens=count_image_tokens(width, height, config),
        original_size=(width, height),
    )


def global_view(image: Image.Image, config: ProcessingConfig) -> Image.Image:
    """The padded base_size x base_size view as a PIL image (before normalisation)."""
    side = config.base_size
    if not config.crop_mode and side <= config.crop_size:
        # HF crop_mode=False with a small view squashes to a square first (spec 6.5, non-crop modes).
        image = image.resize((side, side), Image.Resampling.BICUBIC)
    return ImageOps.pad(image, (side, side), method=Image.Resampling.BICUBIC, color=PAD_COLOR,
                        centering=(0.5, 0.5))


def resize_for_crops(image: Image.Image, cols: int, rows: int, tile: int) -> Image.Image:
    """The whole image resized (aspect not kept) to the grid; Image.resize's default filter is BICUBIC."""
    return image.resize((tile * cols, tile * rows), Image.Resampling.BICUBIC)


def _crop_views(image: Image.Image, cols: int, rows: int, tile: int) -> torch.Tensor:
    return _tiles(to_pixels(resize_for_crops(image, cols, rows, tile)), cols, rows, tile)


def _tiles(resized: torch.Tensor, cols: int, rows: int, tile: int) -> torch.Tensor:
    """(3, T*rows, T*cols) -> (rows*cols, 3, T, T), row-major like the reference: crop i sits at column
    i % cols, row i // cols."""
    tiles = resized.reshape(3, rows, tile, cols, tile).permute(1, 3, 0, 2, 4)  # (rows, cols, 3, T, T)
    return tiles.reshape(rows * cols, 3, tile, tile).contiguous()


def to_pixels(image: Image.Image) -> torch.Tensor:
    """uint8 RGB image -> (3, H, W) uint8 tensor."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 as torchvision ToTensor + Normalize(0.5, 0.5): (v/255 - 0.5)/0.5."""
    # Kept as three float32 steps (not 2v/255 - 1) so the rounding matches the reference exactly.
    return pixels.to(torch.float32).div(255).sub(0.5).div(0.5)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """uint8 RGB -> (3, H, W) float32, normalised like the reference."""
    return normalize(to_pixels(image))

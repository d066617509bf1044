"""dsocr: DeepSeek-OCR 2 in native PyTorch.

Public surface (imported lazily so `import dsocr` stays fast and never imports torch):
`load`, `OCR`, `OCRResult`, `SamplingParams`, and the errors of `dsocr.errors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dsocr.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ConfigError,
    DsocrError,
    GenerationError,
    ImageDecodeError,
    InputError,
    UnsupportedFormatError,
    WeightMismatchError,
)

if TYPE_CHECKING:
    from dsocr.api import OCR, OCRResult, load
    from dsocr.generation.params import SamplingParams

__version__ = "0.1.0"
__all__ = [
    "OCR",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigError",
    "DsocrError",
    "GenerationError",
    "ImageDecodeError",
    "InputError",
    "OCRResult",
    "SamplingParams",
    "UnsupportedFormatError",
    "WeightMismatchError",
    "load",
]

_LAZY = {"OCR": "dsocr.api", "OCRResult": "dsocr.api", "load": "dsocr.api",
         "SamplingParams": "dsocr.generation.params"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dsocr' has no attribute {name!r}")

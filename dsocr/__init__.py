"""dsocr: DeepSeek-OCR 2 in native PyTorch.

Public surface (imported lazily so `import dsocr` stays fast and never imports torch):
`load`, `OCR`, `OCRResult`, `SamplingParams`, the document pipeline's `Converter`, `ConvertOptions` and
`Document`, and the errors of `dsocr.errors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dsocr.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    ConfigError,
    DocumentDecodeError,
    DsocrError,
    EmptyDocumentError,
    GenerationError,
    ImageDecodeError,
    InputError,
    PasswordError,
    UnsupportedFormatError,
    WeightMismatchError,
)

if TYPE_CHECKING:
    from dsocr.api import OCR, OCRResult, load
    from dsocr.generation.params import SamplingParams
    from dsocr.pipeline.document import Document
    from dsocr.pipeline.pipeline import Converter, ConvertOptions

__version__ = "0.1.0"
__all__ = [
    "OCR",
    "CheckpointError",
    "CheckpointNotFoundError",
    "ConfigError",
    "ConvertOptions",
    "Converter",
    "Document",
    "DocumentDecodeError",
    "DsocrError",
    "EmptyDocumentError",
    "GenerationError",
    "ImageDecodeError",
    "InputError",
    "OCRResult",
    "PasswordError",
    "SamplingParams",
    "UnsupportedFormatError",
    "WeightMismatchError",
    "load",
]

_LAZY = {"OCR": "dsocr.api", "OCRResult": "dsocr.api", "load": "dsocr.api",
         "SamplingParams": "dsocr.generation.params", "Converter": "dsocr.pipeline.pipeline",
         "ConvertOptions": "dsocr.pipeline.pipeline", "Document": "dsocr.pipeline.document"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dsocr' has no attribute {name!r}")

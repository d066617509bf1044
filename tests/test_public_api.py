import subprocess
import sys

import dsocr


def test_public_surface_is_pinned() -> None:
    assert sorted(dsocr.__all__) == sorted([
        "OCR", "OCRResult", "SamplingParams", "load", "DsocrError", "ConfigError", "CheckpointError",
        "CheckpointNotFoundError", "WeightMismatchError", "InputError", "UnsupportedFormatError",
        "ImageDecodeError", "GenerationError", "Converter", "ConvertOptions", "Document", "DocumentDecodeError",
        "PasswordError", "EmptyDocumentError"])
    for name in dsocr.__all__:
        assert getattr(dsocr, name) is not None


def test_import_dsocr_does_not_import_torch_or_the_network_stack() -> None:
    code = "import sys, dsocr; print(sorted(m for m in ('torch', 'huggingface_hub', 'PIL') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_error_is_a_dsocr_error() -> None:
    for name in dsocr.__all__:
        obj = getattr(dsocr, name)
        if isinstance(obj, type) and name.endswith("Error"):
            assert issubclass(obj, dsocr.DsocrError)

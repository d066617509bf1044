"""The exception hierarchy of dsocr; every error a user can see is one of these.

Must not import anything from dsocr (leaf module).

    DsocrError
    ├── ConfigError                 invalid configuration value or unsupported mode
    ├── CheckpointError
    │   ├── CheckpointNotFoundError model id/dir cannot be resolved (offline, missing files)
    │   └── WeightMismatchError     missing / unexpected / mis-shaped tensors
    ├── InputError
    │   ├── UnsupportedFormatError  not an image we can read
    │   ├── ImageDecodeError        file exists but cannot be decoded
    │   ├── DocumentDecodeError     a PDF that is corrupt, truncated or cannot be rendered
    │   ├── PasswordError           an encrypted PDF without the (right) password
    │   └── EmptyDocumentError      no pages, or the page selection selects none
    └── GenerationError             invalid sampling parameters or prompt
"""

from __future__ import annotations


class DsocrError(Exception):
    """Base class of all dsocr errors."""


class ConfigError(DsocrError, ValueError):
    """A configuration value is invalid or a mode is not supported by this model."""


class CheckpointError(DsocrError):
    """A checkpoint cannot be used."""


class CheckpointNotFoundError(CheckpointError):
    """A model directory or hub id could not be resolved to files on disk."""


class WeightMismatchError(CheckpointError):
    """The checkpoint's tensors do not match the model's parameters."""

    def __init__(
        self,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
    ) -> None:
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched
        super().__init__(self._describe())

    def _describe(self) -> str:
        def head(names: list[str]) -> str:
            shown = ", ".join(names[:8])
            return shown + (f", ... ({len(names) - 8} more)" if len(names) > 8 else "")

        parts = ["checkpoint does not match the model:"]
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {head(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {head(self.unexpected)}")
        if self.mismatched:
            shapes = [f"{n} (checkpoint {list(c)}, model {list(m)})" for n, c, m in self.mismatched]
            parts.append(f"{len(self.mismatched)} mis-shaped: {head(shapes)}")
        return " ".join(parts)


class InputError(DsocrError, ValueError):
    """User input (an image, a prompt) cannot be used."""


class UnsupportedFormatError(InputError):
    """The input is not in a format we can read."""


class ImageDecodeError(InputError):
    """The input looks like an image but cannot be decoded."""


class GenerationError(DsocrError, ValueError):
    """Invalid generation request (sampling parameters, prompt without image tokens, ...)."""


class DocumentDecodeError(InputError):
    """The input looks like a document (PDF) but cannot be read or rendered."""


class PasswordError(InputError):
    """The document is encrypted and no password, or a wrong one, was given."""


class EmptyDocumentError(InputError):
    """The document has no pages, or the requested page selection selects none of them."""

"""Resolve a `--model` value (local directory or hub id) to a local checkpoint directory, and list its shards.

Must not load tensors or parse config.json; reads only the HF_* environment variables, and touches the network
only when a hub id is neither cached nor forbidden by offline mode.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dsocr.errors import CheckpointError, CheckpointNotFoundError

logger = logging.getLogger(__name__)

OFFICIAL_MODEL_ID = "deepseek-ai/DeepSeek-OCR-2"
EMBEDDED_DIR = Path(__file__).parent / "embedded"  # our small model, shipped inside the package (when trained)
REQUIRED_FILES = ("config.json", "tokenizer.json")
INDEX_FILE = "model.safetensors.index.json"
# Only what we load: configs, tokenizer, weights. Never the repository's remote Python code.
ALLOW_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model")

_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_TRUE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})


@dataclass(frozen=True, slots=True, kw_only=True)
class HubSettings:
    """Where the Hugging Face cache lives and whether we may use the network, read once per call."""

    cache_dir: Path
    offline: bool
    offline_source: str  # what switched offline mode on, for error messages ("" when online)

    @classmethod
    def from_env(cls, *, cache_dir: str | os.PathLike[str] | None = None,
                 offline: bool | None = None) -> HubSettings:
        """Explicit arguments win; else HF_HUB_CACHE / HF_HOME / HF_HUB_OFFLINE, like huggingface_hub."""
        if offline is not None:
            source = "offline=True" if offline else ""
        else:
            source = next((f"{name}={os.environ[name]}" for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
                           if os.environ.get(name, "").strip().upper() in _TRUE_VALUES), "")
            offline = bool(source)
        return cls(cache_dir=_cache_dir(cache_dir), offline=offline, offline_source=source)


def _cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(name):
            return Path(os.path.expandvars(os.environ[name])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def resolve_model_dir(model: str | os.PathLike[str], *, revision: str | None = None,
                      offline: bool | None = None, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return a local directory holding config.json, tokenizer.json and safetensors weights for `model`.

    `model` is tried as (1) an existing local directory, (2) a hub id `owner/name` already in the Hugging Face
    cache, (3) a hub id downloaded now, unless offline. `offline=None` reads HF_HUB_OFFLINE; `cache_dir=None`
    reads HF_HUB_CACHE / HF_HOME. `revision` (branch, tag or commit) applies to hub ids only.
    Raises CheckpointNotFoundError with what is missing and what to do.
    """
    text = os.fspath(model)
    if not isinstance(text, str) or not text.strip():
        raise CheckpointNotFoundError(f"model must name a directory or a hub id, got {text!r}")
    path = Path(text).expanduser()
    if path.exists():
        return _validated_local_dir(path)
    is_hub_id = _HUB_ID.fullmatch(text) is not None
    if isinstance(model, os.PathLike) or (_looks_like_path(text) and not is_hub_id):
        raise CheckpointNotFoundError(f"model {text!r}: no such directory ({path.absolute()})")
    if not is_hub_id:
        raise CheckpointNotFoundError(
            f"model {text!r} is neither an existing directory nor a hub id of the form owner/name "
            f"(e.g. {OFFICIAL_MODEL_ID})")
    return _resolve_hub_id(text, revision, HubSettings.from_env(cache_dir=cache_dir, offline=offline))


@dataclass(frozen=True, slots=True)
class ModelChoice:
    model: str  # what `resolve_model_dir` is given
    source: str  # "--model", "DSOCR_MODEL", "cache" (the official model, cached), "embedded", "default"

    def notice(self) -> str | None:
        """The line a command prints when it chose the model itself, else None."""
        if self.source == "embedded":
            return (f"dsocr: using the embedded model ({self.model}), which reads clean printed documents; for the "
                    f"official model: huggingface-cli download {OFFICIAL_MODEL_ID} (or --model DIR)")
        if self.source == "cache":
            return f"dsocr: using {OFFICIAL_MODEL_ID} from the Hugging Face cache"
        return None


def choose_model(explicit: str | os.PathLike[str] | None = None, *, cache_dir: str | os.PathLike[str] | None = None,
                 embedded_dir: Path | None = None) -> ModelChoice:
    """Which model a command uses: `--model`, then DSOCR_MODEL, then the official model if it is in the local
    Hugging Face cache, then the embedded model; never the network. With none of them, the official id (which
    `resolve_model_dir` downloads when online, or explains how to get when offline)."""
    if explicit is not None and os.fspath(explicit).strip():
        return ModelChoice(os.fspath(explicit), "--model")
    if os.environ.get("DSOCR_MODEL", "").strip():
        return ModelChoice(os.environ["DSOCR_MODEL"].strip(), "DSOCR_MODEL")
    cached = _cached_snapshot(OFFICIAL_MODEL_ID, None, HubSettings.from_env(cache_dir=cache_dir, offline=True))
    if cached is not None and not _missing_files(cached):
        return ModelChoice(OFFICIAL_MODEL_ID, "cache")
    embedded = embedded_dir or EMBEDDED_DIR
    if embedded.is_dir() and not _missing_files(embedded):
        return ModelChoice(str(embedded), "embedded")
    return ModelChoice(OFFICIAL_MODEL_ID, "default")


def _looks_like_path(text: str) -> bool:
    separators = [os.sep] + ([os.altsep] if os.altsep else [])
    return text.startswith((".", "/", "~")) or any(sep in text for sep in separators)


def _validated_local_dir(path: Path) -> Path:
    if not path.is_dir():
        raise CheckpointNotFoundError(f"model {str(path)!r}: expected a directory, found a file")
    missing = _missing_files(path)
    if missing:
        raise CheckpointNotFoundError(
            f"model directory {str(path)!r} is incomplete: missing {', '.join(missing)}")
    return path.resolve()


def _missing_files(path: Path) -> list[str]:
    """Names of what a checkpoint directory lacks (empty when it is usable)."""
    missing = [name for name in REQUIRED_FILES if not (path / name).is_file()]
    if not (path / INDEX_FILE).is_file() and not any(path.glob("*.safetensors")):
        missing.append(f"model weights (*.safetensors or {INDEX_FILE})")
    return missing


def _resolve_hub_id(repo_id: str, revision: str | None, settings: HubSettings) -> Path:
    cached = _cached_snapshot(repo_id, revision, settings)
    if cached is not None and not _missing_files(cached):
        logger.debug("model %s found in the Hugging Face cache at %s", repo_id, cached)
        return cached
    if settings.offline:
        if cached is not None:
            raise CheckpointNotFoundError(_incomplete_message(repo_id, cached, settings.offline_source))
        why = f"offline mode is on ({settings.offline_source})"
        raise CheckpointNotFoundError(_not_cached_message(repo_id, settings, why))
    snapshot = _download(repo_id, revision, settings)
    missing = _missing_files(snapshot)
    if missing:
        raise CheckpointNotFoundError(
            f"hub model {repo_id!r} does not have the files we need: missing {', '.join(missing)}")
    return snapshot


def _cached_snapshot(repo_id: str, revision: str | None, settings: HubSettings) -> Path | None:
    """The cached snapshot directory for `repo_id@revision`, or None; never touches the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (  # type: ignore[attr-defined]  # lazily re-exported; stable since 0.2x
        HFValidationError,
        LocalEntryNotFoundError,
    )

    try:
        found = snapshot_download(repo_id, revision=revision, cache_dir=settings.cache_dir,
                                  allow_patterns=list(ALLOW_PATTERNS), local_files_only=True)
    except HFValidationError as exc:
        raise CheckpointNotFoundError(f"model {repo_id!r} is not a valid hub id: {exc}") from exc
    except LocalEntryNotFoundError:  # includes an incomplete snapshot, which a download may complete
        return None
    return Path(found)


def _download(repo_id: str, revision: str | None, settings: HubSettings) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import (  # type: ignore[attr-defined]  # lazily re-exported; stable since 0.2x
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    logger.info("downloading %s%s into %s", repo_id, f"@{revision}" if revision else "", settings.cache_dir)
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=settings.cache_dir,
                                      allow_patterns=list(ALLOW_PATTERNS)))
    except GatedRepoError as exc:
        raise CheckpointNotFoundError(
            f"hub model {repo_id!r} is gated: accept its terms on the hub, then log in (`hf auth login`)"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise CheckpointNotFoundError(
            f"hub model {repo_id!r} does not exist (or is private: log in with `hf auth login`)") from exc
    except RevisionNotFoundError as exc:
        raise CheckpointNotFoundError(f"hub model {repo_id!r} has no revision {revision!r}") from exc
    # The transport's exception types differ across huggingface_hub versions (requests, httpx, ...), so the
    # boundary catches everything else and reports it as "could not reach the hub", keeping the cause chained.
    except Exception as exc:
        why = f"could not reach the hub ({_short_reason(exc)})"
        raise CheckpointNotFoundError(_not_cached_message(repo_id, settings, why)) from exc


def _short_reason(exc: BaseException) -> str:
    """`Type: first line` of the innermost cause, e.g. 'ConnectError: [Errno -2] Name or service ...'."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    first_line = (str(exc).strip().splitlines() or [""])[0]
    if len(first_line) > 160:
        first_line = first_line[:157] + "..."
    return f"{type(exc).__name__}: {first_line}" if first_line else type(exc).__name__


def _not_cached_message(repo_id: str, settings: HubSettings, why: str) -> str:
    return (f"cannot load model {repo_id!r}: it is not in the Hugging Face cache at {settings.cache_dir}, "
            f"and {why}.\n"
            f"To fix, either run `huggingface-cli download {repo_id}` (or `hf download {repo_id}`) "
            f"on a machine with network and copy its cache here (point HF_HUB_CACHE at the copy),\n"
            f"or pass --model /path/to/dir (a directory with config.json, tokenizer.json and *.safetensors).")


def _incomplete_message(repo_id: str, snapshot: Path, offline_source: str) -> str:
    return (f"cannot load model {repo_id!r}: the cached snapshot at {snapshot} is incomplete "
            f"(missing {', '.join(_missing_files(snapshot))}) and offline mode is on ({offline_source}).\n"
            f"To fix, re-run `huggingface-cli download {repo_id}` with network, "
            f"or pass --model /path/to/dir.")


def list_checkpoint_files(model_dir: Path) -> list[Path]:
    """The safetensors shards of `model_dir` in order: the index's shards if there is an index, else all.

    Raises CheckpointNotFoundError naming a shard the index lists but the directory lacks, or when there are
    no weights at all; CheckpointError when the index is not a valid safetensors index.
    """
    model_dir = Path(model_dir)
    index = model_dir / INDEX_FILE
    if not index.is_file():
        shards = sorted(model_dir.glob("*.safetensors"))
        if not shards:
            raise CheckpointNotFoundError(f"no *.safetensors files and no {INDEX_FILE} in {str(model_dir)!r}")
        return shards
    shards = [model_dir / name for name in _index_shard_names(index)]
    for shard in shards:
        if not shard.is_file():
            raise CheckpointNotFoundError(
                f"shard {shard.name!r} listed in {index} is missing from {model_dir}")
    return shards


def _index_shard_names(index: Path) -> list[str]:
    """Distinct shard file names of a safetensors index, sorted (model-00001-of-00002 before 00002)."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{index} is not a safetensors index with a weight_map: {exc!r}") from exc
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: weight_map must be a non-empty object of tensor name -> shard file")
    bad = [n for n in weight_map.values() if not isinstance(n, str) or not n or Path(n).name != n]
    if bad:
        raise CheckpointError(f"{index}: weight_map names shards that are not plain file names: {bad[:3]}")
    return sorted(set(weight_map.values()))

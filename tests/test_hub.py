"""Tests of dsocr.hub: local directories, the Hugging Face cache layout, offline errors, shard lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dsocr.errors import CheckpointError, CheckpointNotFoundError
from dsocr.hub import OFFICIAL_MODEL_ID, list_checkpoint_files, resolve_model_dir

SHA = "0123456789abcdef0123456789abcdef01234567"
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _isolated_hf_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test sees the developer's cache or offline settings; the default cache is an empty temp dir."""
    names = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    for name in names:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def write_checkpoint_files(directory: Path, shards: tuple[str, ...] = ("model.safetensors",),
                           index: bool = False) -> Path:
    """config.json, tokenizer.json and placeholder shard files (hub.py checks presence, not contents)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"architectures": ["DeepseekOCR2ForCausalLM"]}))
    (directory / "tokenizer.json").write_text("{}")
    for shard in shards:
        (directory / shard).write_bytes(b"\0" * 8)
    if index:
        weight_map = {f"tensor_{i}": shard for i, shard in enumerate(reversed(shards))}
        (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return directory


def write_hf_cache(cache: Path, repo_id: str, *, files: tuple[str, ...] = ("config.json", "tokenizer.json",
                                                                            "model.safetensors")) -> Path:
    """The real cache layout: models--owner--name/{blobs,snapshots/<sha>,refs/main}, snapshots symlinked."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / SHA
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for i, name in enumerate(files):
        blob = repo / "blobs" / f"blob{i:040d}"
        blob.write_text("{}" if name.endswith(".json") else "weights")
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(SHA)
    return snapshot


# local directories

def test_local_directory_with_single_safetensors_resolves_to_itself(tmp_path: Path) -> None:
    model_dir = write_checkpoint_files(tmp_path / "ckpt")
    assert resolve_model_dir(model_dir) == model_dir.resolve()
    assert resolve_model_dir(str(model_dir)) == model_dir.resolve()


def test_tilde_path_expands_to_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    model_dir = write_checkpoint_files(tmp_path / "ckpt")
    assert resolve_model_dir("~/ckpt") == model_dir.resolve()


def test_relative_owner_name_directory_wins_over_hub_id(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = write_checkpoint_files(tmp_path / "deepseek-ai" / "DeepSeek-OCR-2")
    monkeypatch.chdir(tmp_path)
    assert resolve_model_dir(OFFICIAL_MODEL_ID, offline=True) == model_dir.resolve()


def test_incomplete_local_directory_lists_every_missing_file(tmp_path: Path) -> None:
    model_dir = tmp_path / "ckpt"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_model_dir(model_dir)
    message = str(info.value)
    assert "tokenizer.json" in message and "safetensors" in message and "config.json" not in message


def test_file_instead_of_directory_is_rejected(tmp_path: Path) -> None:
    weights = write_checkpoint_files(tmp_path / "ckpt") / "model.safetensors"
    with pytest.raises(CheckpointNotFoundError, match="expected a directory"):
        resolve_model_dir(weights)


@pytest.mark.parametrize("model", ["./no-such-model", "../nope/model", "~/no/such/dir", "a/b/c"])
def test_missing_path_looking_string_says_no_such_directory(model: str) -> None:
    with pytest.raises(CheckpointNotFoundError, match="no such directory"):
        resolve_model_dir(model, offline=True)


def test_missing_pathlike_is_never_taken_for_a_hub_id(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="no such directory"):
        resolve_model_dir(Path("deepseek-ai") / "not-here", offline=True)


def test_bare_name_that_is_no_directory_asks_for_owner_name() -> None:
    with pytest.raises(CheckpointNotFoundError, match="owner/name"):
        resolve_model_dir("DeepSeek-OCR-2", offline=True)


# the Hugging Face cache

def test_cached_hub_id_is_found_offline_via_hf_hub_cache(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = write_hf_cache(tmp_path / "hf-cache", OFFICIAL_MODEL_ID)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve_model_dir(OFFICIAL_MODEL_ID)
    assert resolved == snapshot
    assert (resolved / "config.json").read_text() == "{}"


def test_cached_hub_id_is_found_via_hf_home_and_by_commit_revision(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = write_hf_cache(tmp_path / "hf-home" / "hub", "owner/name")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    assert resolve_model_dir("owner/name", offline=True) == snapshot
    assert resolve_model_dir("owner/name", revision=SHA, offline=True) == snapshot


def test_cache_dir_argument_wins_over_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = write_hf_cache(tmp_path / "explicit", "owner/name")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert resolve_model_dir("owner/name", offline=True, cache_dir=tmp_path / "explicit") == snapshot


def test_cached_hub_id_is_returned_without_network_when_online(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = write_hf_cache(tmp_path / "hf-cache", "owner/name")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    assert resolve_model_dir("owner/name", offline=False) == snapshot


def test_offline_uncached_hub_id_explains_where_it_looked_and_what_to_do(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_model_dir(OFFICIAL_MODEL_ID)
    message = str(info.value)
    assert OFFICIAL_MODEL_ID in message
    assert str(tmp_path / "empty-cache") in message
    assert "offline" in message and "HF_HUB_OFFLINE=1" in message
    assert f"huggingface-cli download {OFFICIAL_MODEL_ID}" in message and "--model /path/to/dir" in message
    assert len(message.splitlines()) <= 4


def test_offline_argument_overrides_unset_environment(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"offline mode is on \(offline=True\)"):
        resolve_model_dir("owner/name", offline=True, cache_dir=tmp_path / "empty")


def test_offline_incomplete_snapshot_lists_missing_files(tmp_path: Path) -> None:
    write_hf_cache(tmp_path / "hf-cache", "owner/name", files=("config.json",))
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_model_dir("owner/name", offline=True, cache_dir=tmp_path / "hf-cache")
    assert "incomplete" in str(info.value) and "tokenizer.json" in str(info.value)


def test_unreachable_hub_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    """Online mode with nothing cached and no hub to reach: the download must fail in seconds and say why.

    Runs in a subprocess so the hub endpoint (read by huggingface_hub at import) can point at a closed
    loopback port: deterministic here and on machines with network, where the real hub would start a
    multi-GB download.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_CACHE=str(tmp_path / "empty-cache"),
               HF_HUB_ETAG_TIMEOUT="5", HF_HUB_DOWNLOAD_TIMEOUT="5", HF_HUB_DISABLE_TELEMETRY="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])))
    script = textwrap.dedent(f"""
        from dsocr.errors import CheckpointNotFoundError
        from dsocr.hub import resolve_model_dir
        try:
            resolve_model_dir({OFFICIAL_MODEL_ID!r})
        except CheckpointNotFoundError as exc:
            print(exc)
        else:
            raise SystemExit("resolved without a hub")
    """)
    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", script], check=False, env=env, capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("resolve_model_dir hung for 60 s against an unreachable hub")
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    message = done.stdout
    assert OFFICIAL_MODEL_ID in message and str(tmp_path / "empty-cache") in message
    assert "could not reach the hub" in message and "Error" in message  # the short reason, e.g. ConnectError
    assert f"huggingface-cli download {OFFICIAL_MODEL_ID}" in message and "--model /path/to/dir" in message
    assert elapsed < 30, f"failure took {elapsed:.1f} s"


# shard lists

def test_sharded_checkpoint_lists_index_shards_in_order(tmp_path: Path) -> None:
    shards = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    model_dir = write_checkpoint_files(tmp_path / "ckpt", shards, index=True)
    assert resolve_model_dir(model_dir) == model_dir.resolve()
    assert list_checkpoint_files(model_dir) == [model_dir / s for s in shards]


def test_index_naming_a_missing_shard_is_reported_by_name(tmp_path: Path) -> None:
    shards = ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")
    model_dir = write_checkpoint_files(tmp_path / "ckpt", shards, index=True)
    (model_dir / shards[1]).unlink()
    with pytest.raises(CheckpointNotFoundError, match="model-00002-of-00002.safetensors"):
        list_checkpoint_files(model_dir)


def test_without_index_all_safetensors_are_listed_sorted(tmp_path: Path) -> None:
    model_dir = write_checkpoint_files(tmp_path / "ckpt", ("b.safetensors", "a.safetensors"))
    assert list_checkpoint_files(model_dir) == [model_dir / "a.safetensors", model_dir / "b.safetensors"]


def test_index_without_weight_map_or_with_escaping_shard_names_is_a_checkpoint_error(tmp_path: Path) -> None:
    model_dir = write_checkpoint_files(tmp_path / "ckpt")
    index = model_dir / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}}))
    with pytest.raises(CheckpointError, match="weight_map"):
        list_checkpoint_files(model_dir)
    index.write_text(json.dumps({"weight_map": {"w": "../outside.safetensors"}}))
    with pytest.raises(CheckpointError, match="plain file names"):
        list_checkpoint_files(model_dir)


def test_directory_without_weights_has_no_checkpoint_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="safetensors"):
        list_checkpoint_files(tmp_path)


# which model a command uses when --model is not given


def test_model_choice_order_is_flag_env_cache_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dsocr.hub import OFFICIAL_MODEL_ID, choose_model

    monkeypatch.delenv("DSOCR_MODEL", raising=False)
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    embedded = write_checkpoint_files(tmp_path / "embedded")
    nothing = tmp_path / "no-embedded"
    # nothing anywhere: the official id, which resolve_model_dir downloads or explains
    assert choose_model(None, cache_dir=cache, embedded_dir=nothing).source == "default"
    # the embedded model, with a line saying how to get the official one
    choice = choose_model(None, cache_dir=cache, embedded_dir=embedded)
    assert (choice.source, choice.model) == ("embedded", str(embedded))
    assert "huggingface-cli download " + OFFICIAL_MODEL_ID in choice.notice()
    # the official model in the cache wins over the embedded one
    write_hf_cache(cache, OFFICIAL_MODEL_ID)
    choice = choose_model(None, cache_dir=cache, embedded_dir=embedded)
    assert (choice.source, choice.model) == ("cache", OFFICIAL_MODEL_ID) and "cache" in choice.notice()
    # DSOCR_MODEL wins over both, and --model over everything, silently
    monkeypatch.setenv("DSOCR_MODEL", "/some/dir")
    assert choose_model(None, cache_dir=cache, embedded_dir=embedded).model == "/some/dir"
    choice = choose_model("other/model", cache_dir=cache, embedded_dir=embedded)
    assert (choice.source, choice.model, choice.notice()) == ("--model", "other/model", None)

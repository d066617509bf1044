import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dsocr.errors import CheckpointError, WeightMismatchError
from dsocr.model.weights import build_model, load_model, save_checkpoint
from dsocr.testing.fixtures import random_model, tiny_config, write_random_checkpoint


def _shard(model_dir: Path) -> Path:
    return next(model_dir.glob("*.safetensors"))


def test_state_dict_uses_the_official_parameter_names() -> None:
    names = set(build_model(tiny_config()).state_dict())
    for name in ("model.sam_model.patch_embed.proj.weight", "model.sam_model.blocks.0.attn.rel_pos_h",
                 "model.sam_model.neck.1.weight", "model.sam_model.net_3.weight",
                 "model.qwen2_model.query_768.weight", "model.qwen2_model.query_1024.weight",
                 "model.qwen2_model.model.model.layers.1.self_attn.q_proj.bias",
                 "model.qwen2_model.model.model.norm.weight", "model.projector.layers.bias",
                 "model.view_seperator", "model.embed_tokens.weight", "model.layers.0.mlp.gate_proj.weight",
                 "model.layers.1.mlp.gate.weight", "model.layers.1.mlp.experts.7.down_proj.weight",
                 "model.layers.2.mlp.shared_experts.up_proj.weight", "model.norm.weight", "lm_head.weight"):
        assert name in names, name
    assert not any("rotary" in n or "inv_freq" in n for n in names)


def test_load_returns_exactly_the_saved_weights(tmp_path: Path) -> None:
    source = random_model(tiny_config(), seed=3)
    save_checkpoint(source, tmp_path)
    loaded = load_model(tmp_path)
    for (name, a), (_, b) in zip(source.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert not any(p.requires_grad for p in loaded.parameters())
    assert all(p.device.type == "cpu" for p in loaded.parameters())


def test_sharded_checkpoint_loads_like_a_single_file(tmp_path: Path) -> None:
    source = random_model(tiny_config(), seed=4)
    save_checkpoint(source, tmp_path, max_shard_bytes=200_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 3
    loaded = load_model(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))


def test_bfloat16_checkpoint_is_cast_to_the_requested_dtype(tmp_path: Path) -> None:
    source = random_model(tiny_config(), seed=5)
    save_checkpoint(source, tmp_path, dtype=torch.bfloat16)
    assert load_file(_shard(tmp_path))["lm_head.weight"].dtype == torch.bfloat16
    loaded = load_model(tmp_path, dtype=torch.float32)
    assert loaded.lm_head.weight.dtype == torch.float32
    assert torch.equal(loaded.lm_head.weight, source.lm_head.weight.to(torch.bfloat16).float())


def _rewrite(model_dir: Path, edit) -> None:
    shard = _shard(model_dir)
    tensors = load_file(shard)
    edit(tensors)
    save_file(tensors, shard)
    index = model_dir / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": dict.fromkeys(tensors, shard.name)}))


def test_mismatch_error_lists_missing_unexpected_and_misshaped_names(tmp_path: Path) -> None:
    write_random_checkpoint(tmp_path, tokenizer=False)

    def edit(t: dict) -> None:
        del t["model.view_seperator"]
        t["model.image_newline"] = torch.zeros(64)
        t["model.sam_model.blocks.0.attn.proj.weight"] = torch.zeros(31, 32)

    _rewrite(tmp_path, edit)
    with pytest.raises(WeightMismatchError) as err:
        load_model(tmp_path)
    message = str(err.value)
    assert "model.view_seperator" in message and "missing" in message
    assert "model.image_newline" in message and "unexpected" in message
    assert "blocks.0.attn.proj.weight" in message and "[31, 32]" in message
    assert err.value.missing == ["model.view_seperator"] and err.value.unexpected == ["model.image_newline"]


def test_corrupt_safetensors_file_raises_checkpoint_error(tmp_path: Path) -> None:
    write_random_checkpoint(tmp_path, tokenizer=False)
    _shard(tmp_path).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_model(tmp_path)


def test_missing_shard_is_named(tmp_path: Path) -> None:
    write_random_checkpoint(tmp_path, tokenizer=False, max_shard_bytes=200_000)
    victim = sorted(tmp_path.glob("*.safetensors"))[1]
    victim.unlink()
    with pytest.raises(CheckpointError, match=victim.name):
        load_model(tmp_path)


def test_model_is_built_on_the_meta_device_before_loading() -> None:
    model = build_model(tiny_config())
    assert all(p.is_meta for p in model.parameters())

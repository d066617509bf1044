import json

import pytest

from dsocr.errors import ConfigError
from dsocr.model.config import DeepseekOCR2Config

# The official config.json of deepseek-ai/DeepSeek-OCR-2, abridged to the fields that matter.
OFFICIAL = {
    "architectures": ["DeepseekOCR2ForCausalLM"],
    "language_config": {
        "bos_token_id": 0, "eos_token_id": 1, "first_k_dense_replace": 1, "hidden_size": 1280,
        "intermediate_size": 6848, "kv_lora_rank": None, "max_position_embeddings": 8192,
        "moe_intermediate_size": 896, "n_group": 1, "n_routed_experts": 64, "n_shared_experts": 2,
        "num_attention_heads": 10, "num_experts_per_tok": 6, "num_hidden_layers": 12, "num_key_value_heads": 10,
        "q_lora_rank": None, "topk_method": "greedy", "use_mla": False, "vocab_size": 129280,
    },
    "projector_config": {"input_dim": 896, "model_type": "mlp_projector", "n_embed": 1280, "projector_type": "linear"},
    "vision_config": {
        "image_size": 1024, "model_name": "deepencoderv2",
        "width": {"qwen2-0-5b": {"dim": 896},
                  "sam_vit_b": {"downsample_channels": [512, 1024], "global_attn_indexes": [2, 5, 8, 11],
                                "heads": 12, "layers": 12, "width": 768}},
    },
    "hidden_size": 1280, "vocab_size": 129280, "torch_dtype": "bfloat16",
}


def test_official_config_parses_to_the_official_sizes() -> None:
    cfg = DeepseekOCR2Config.from_hf(OFFICIAL)
    assert cfg.language.hidden_size == 1280 and cfg.language.head_dim == 128
    assert cfg.language.rope_theta == 10000.0 and cfg.language.norm_topk_prob is False
    assert cfg.sam.width == 768 and cfg.sam.global_attn_indexes == (2, 5, 8, 11) and cfg.sam.window_size == 14
    # config.json's downsample_channels [512, 1024] is stale for v2: net_3 has 896 outputs.
    assert cfg.sam.downsample_channels == (512, 896)
    assert cfg.encoder.num_hidden_layers == 24 and cfg.encoder.num_key_value_heads == 2
    assert (cfg.num_queries_crop, cfg.num_queries_global) == (144, 256)
    assert [cfg.language.is_moe_layer(i) for i in range(3)] == [False, True, True]


def test_tensor_shapes_override_stale_vision_fields() -> None:
    shapes = {"model.sam_model.net_2.weight": (512, 256, 3, 3), "model.sam_model.net_3.weight": (896, 512, 3, 3)}
    stale = json.loads(json.dumps(OFFICIAL))
    del stale["vision_config"]["width"]["qwen2-0-5b"]
    cfg = DeepseekOCR2Config.from_hf(stale, shapes)
    assert cfg.sam.downsample_channels == (512, 896) and cfg.encoder.hidden_size == 896


def test_round_trip_through_to_hf_keeps_every_field() -> None:
    from dsocr.testing.fixtures import tiny_config

    cfg = tiny_config()
    assert DeepseekOCR2Config.from_hf(json.loads(json.dumps(cfg.to_hf()))) == cfg


@pytest.mark.parametrize(("patch", "field"), [
    ({"architectures": ["LlamaForCausalLM"]}, "architectures"),
    ({"language_config": {**OFFICIAL["language_config"], "use_mla": True}}, "use_mla"),
    ({"language_config": {**OFFICIAL["language_config"], "topk_method": "noaux_tc"}}, "topk_method"),
    ({"language_config": {**OFFICIAL["language_config"], "num_attention_heads": 7}}, "hidden_size"),
])
def test_unsupported_configs_raise_config_error_naming_the_field(patch: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        DeepseekOCR2Config.from_hf({**OFFICIAL, **patch})

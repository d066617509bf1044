"""Typed, frozen configuration of DeepSeek-OCR 2, read from the official config.json.

Must not import torch; this is the only module that reads raw config dicts (HF quirks live in `from_hf`).

The official config.json describes the language model twice (top level and `language_config`) and the
vision side only loosely: the reference code hard-codes SAM/encoder sizes, and `downsample_channels`
is stale for v2 (it says 1024, the checkpoint's `net_3` has 896). Every size the reference hard-codes
is a field here whose default is the official value, so tiny test checkpoints describe themselves
through extra keys in the same `vision_config` block, and real tensor shapes win over stale fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dsocr.errors import ConfigError

ARCHITECTURE_V2 = "DeepseekOCR2ForCausalLM"
# Pixels per visual-token side: patch 16, then two stride-2 convolutions (net_2, net_3).
PIXELS_PER_TOKEN = 64
READINGS = ("page", "lines")


def _require(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{name}: {message}")


@dataclass(frozen=True, slots=True, kw_only=True)
class LanguageConfig:
    """The DeepSeek-V2-style MoE decoder (MHA, no MLA)."""

    vocab_size: int = 129280
    hidden_size: int = 1280
    intermediate_size: int = 6848
    moe_intermediate_size: int = 896
    num_hidden_layers: int = 12
    num_attention_heads: int = 10
    num_key_value_heads: int = 10
    n_routed_experts: int = 64
    n_shared_experts: int = 2
    num_experts_per_tok: int = 6
    first_k_dense_replace: int = 1
    moe_layer_freq: int = 1
    norm_topk_prob: bool = False
    routed_scaling_factor: float = 1.0
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_position_embeddings: int = 8192
    bos_token_id: int = 0
    eos_token_id: int = 1

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads"):
            _require(getattr(self, name) > 0, name, "must be positive")
        _require(self.hidden_size % self.num_attention_heads == 0, "hidden_size",
                 f"{self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}")
        _require(self.num_attention_heads % self.num_key_value_heads == 0, "num_key_value_heads",
                 "must divide num_attention_heads")
        _require(0 < self.num_experts_per_tok <= self.n_routed_experts, "num_experts_per_tok",
                 f"must be in 1..n_routed_experts ({self.n_routed_experts})")
        _require(self.moe_layer_freq >= 1, "moe_layer_freq", "must be >= 1")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def is_moe_layer(self, index: int) -> bool:
        return index >= self.first_k_dense_replace and index % self.moe_layer_freq == 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SamConfig:
    """The SAM ViT-B vision tokenizer (`model.sam_model`)."""

    image_size: int = 1024  # the view size pos_embed was trained for: grid = image_size // patch_size
    patch_size: int = 16
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_dim: int = 3072
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    neck_channels: int = 256
    downsample_channels: tuple[int, int] = (512, 896)
    layer_norm_eps: float = 1e-6

    def __post_init__(self) -> None:
        _require(self.width % self.num_heads == 0, "sam.width", "must be divisible by sam.num_heads")
        _require(self.image_size % self.patch_size == 0, "sam.image_size", "must be a multiple of patch_size")
        _require(all(0 <= i < self.depth for i in self.global_attn_indexes), "sam.global_attn_indexes",
                 f"indexes must be in 0..{self.depth - 1}")

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size


@dataclass(frozen=True, slots=True, kw_only=True)
class EncoderConfig:
    """The Qwen2-0.5B-style causal-flow encoder (`model.qwen2_model`)."""

    hidden_size: int = 896
    num_hidden_layers: int = 24
    num_attention_heads: int = 14
    num_key_value_heads: int = 2
    intermediate_size: int = 4864
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0

    def __post_init__(self) -> None:
        _require(self.hidden_size % self.num_attention_heads == 0, "encoder.hidden_size",
                 "must be divisible by encoder.num_attention_heads")
        _require(self.num_attention_heads % self.num_key_value_heads == 0, "encoder.num_key_value_heads",
                 "must divide encoder.num_attention_heads")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass(frozen=True, slots=True, kw_only=True)
class ProjectorConfig:
    input_dim: int = 896
    n_embed: int = 1280
    projector_type: str = "linear"

    def __post_init__(self) -> None:
        _require(self.projector_type == "linear", "projector_type",
                 f"only 'linear' is used by DeepSeek-OCR 2, got {self.projector_type!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeepseekOCR2Config:
    """Whole-model config. `base_size`/`crop_size` are the two view sizes with learned queries."""

    language: LanguageConfig = field(default_factory=LanguageConfig)
    sam: SamConfig = field(default_factory=SamConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    base_size: int = 1024  # global view side -> query_1024
    crop_size: int = 768  # tile side -> query_768
    torch_dtype: str = "bfloat16"
    # How the model is shown a page (ours, not official: "dsocr_reading" in config.json). "page": the official
    # views of the whole page; "lines": the page's text lines packed into views, one per row of visual tokens
    # (dsocr/processing/lines.py), the embedded model's way of reading.
    reading: str = "page"

    def __post_init__(self) -> None:
        _require(self.reading in READINGS, "reading", f"{self.reading!r} is not one of {', '.join(READINGS)}")
        for name in ("base_size", "crop_size"):
            size = getattr(self, name)
            _require(size > 0 and size % PIXELS_PER_TOKEN == 0, name,
                     f"{size} must be a positive multiple of {PIXELS_PER_TOKEN}")
        _require(self.sam.downsample_channels[1] == self.encoder.hidden_size, "encoder.hidden_size",
                 f"{self.encoder.hidden_size} != SAM net_3 channels {self.sam.downsample_channels[1]}")
        _require(self.projector.input_dim == self.encoder.hidden_size, "projector.input_dim",
                 f"{self.projector.input_dim} != encoder hidden {self.encoder.hidden_size}")
        _require(self.projector.n_embed == self.language.hidden_size, "projector.n_embed",
                 f"{self.projector.n_embed} != language hidden {self.language.hidden_size}")

    @property
    def num_queries_global(self) -> int:
        return (self.base_size // PIXELS_PER_TOKEN) ** 2

    @property
    def num_queries_crop(self) -> int:
        return (self.crop_size // PIXELS_PER_TOKEN) ** 2

    @classmethod
    def from_hf(cls, config: Mapping[str, Any],
                tensor_shapes: Mapping[str, tuple[int, ...]] | None = None) -> DeepseekOCR2Config:
        """Parse an official config.json dict; `tensor_shapes` (from the safetensors headers) override
        stale vision fields."""
        architectures = config.get("architectures") or [ARCHITECTURE_V2]
        if ARCHITECTURE_V2 not in architectures:
            raise ConfigError(
                f"architectures: {architectures} is not supported; this build implements {ARCHITECTURE_V2} "
                "(DeepSeek-OCR 2). The v1 model (DeepseekOCRForCausalLM) is not implemented yet.")
        shapes = tensor_shapes or {}
        language = _language_from_hf(config)
        vision = config.get("vision_config") or {}
        widths = vision.get("width") or {}
        sam = _sam_from_hf(widths.get("sam_vit_b") or {}, vision, shapes)
        encoder = _encoder_from_hf(widths.get("qwen2-0-5b") or {}, shapes)
        proj = config.get("projector_config") or {}
        projector = ProjectorConfig(
            input_dim=int(proj.get("input_dim", encoder.hidden_size)),
            n_embed=int(proj.get("n_embed", language.hidden_size)),
            projector_type=str(proj.get("projector_type", "linear")),
        )
        if "model.projector.layers.weight" in shapes:
            out_dim, in_dim = shapes["model.projector.layers.weight"]
            projector = dataclasses.replace(projector, input_dim=in_dim, n_embed=out_dim)
        return cls(
            language=language, sam=sam, encoder=encoder, projector=projector,
            base_size=int(vision.get("image_size", 1024)),
            crop_size=int(vision.get("crop_size", 768)),
            torch_dtype=str(config.get("torch_dtype", "bfloat16")),
            reading=str(config.get("dsocr_reading", "page")),
        )

    def to_hf(self) -> dict[str, Any]:
        """The config.json of a checkpoint in the official layout, plus our extra vision keys."""
        lang = {f.name: getattr(self.language, f.name) for f in dataclasses.fields(self.language)}
        lang.update(use_mla=False, topk_method="greedy", scoring_func="softmax", n_group=1, topk_group=1,
                    q_lora_rank=None, kv_lora_rank=None, qk_nope_head_dim=0, qk_rope_head_dim=0,
                    v_head_dim=0, lm_head=True, rm_head=False, torch_dtype=self.torch_dtype)
        sam = self.sam
        return {
            "architectures": [ARCHITECTURE_V2],
            "model_type": "deepseek_vl_v2",
            "language_config": {"architectures": ["DeepseekV2ForCausalLM"], **lang},
            **lang,
            "projector_config": {"input_dim": self.projector.input_dim, "n_embed": self.projector.n_embed,
                                 "model_type": "mlp_projector", "projector_type": "linear"},
            "vision_config": {
                "image_size": self.base_size, "crop_size": self.crop_size, "model_name": "deepencoderv2",
                "model_type": "vision",
                "width": {
                    "qwen2-0-5b": {"dim": self.encoder.hidden_size,
                                   **{f.name: getattr(self.encoder, f.name)
                                      for f in dataclasses.fields(self.encoder)}},
                    "sam_vit_b": {"width": sam.width, "layers": sam.depth, "heads": sam.num_heads,
                                  "global_attn_indexes": list(sam.global_attn_indexes),
                                  "downsample_channels": list(sam.downsample_channels),
                                  "image_size": sam.image_size, "patch_size": sam.patch_size,
                                  "mlp_dim": sam.mlp_dim, "window_size": sam.window_size,
                                  "neck_channels": sam.neck_channels},
                },
            },
            "torch_dtype": self.torch_dtype,
            **({"dsocr_reading": self.reading} if self.reading != "page" else {}),
        }


def _language_from_hf(config: Mapping[str, Any]) -> LanguageConfig:
    # `language_config` is authoritative; the top level duplicates it in official files.
    raw = {**{k: v for k, v in config.items() if not isinstance(v, dict)}, **(config.get("language_config") or {})}
    if raw.get("use_mla"):
        raise ConfigError("language_config.use_mla: multi-head latent attention is not used by DeepSeek-OCR "
                          "and is not implemented")
    if raw.get("rope_scaling"):
        raise ConfigError(f"language_config.rope_scaling: {raw['rope_scaling']!r} is not supported")
    for key, allowed in (("topk_method", "greedy"), ("scoring_func", "softmax"), ("hidden_act", "silu")):
        if key in raw and raw[key] != allowed:
            raise ConfigError(f"language_config.{key}: only {allowed!r} is supported, got {raw[key]!r}")
    names = {f.name for f in dataclasses.fields(LanguageConfig)}
    values = {k: raw[k] for k in names if raw.get(k) is not None}
    return LanguageConfig(**values)


def _sam_from_hf(sam: Mapping[str, Any], vision: Mapping[str, Any],
                 shapes: Mapping[str, tuple[int, ...]]) -> SamConfig:
    default = SamConfig()
    channels = tuple(sam.get("downsample_channels", default.downsample_channels))
    # v2's config.json says [512, 1024] but net_3 really has 896 outputs: trust the checkpoint.
    if "model.sam_model.net_3.weight" in shapes:
        channels = (shapes["model.sam_model.net_2.weight"][0], shapes["model.sam_model.net_3.weight"][0])
    elif "downsample_channels" in sam and "dim" in (vision.get("width") or {}).get("qwen2-0-5b", {}):
        channels = (channels[0], int(vision["width"]["qwen2-0-5b"]["dim"]))
    return SamConfig(
        image_size=int(sam.get("image_size", vision.get("image_size", default.image_size))),
        patch_size=int(sam.get("patch_size", default.patch_size)),
        width=int(sam.get("width", default.width)),
        depth=int(sam.get("layers", default.depth)),
        num_heads=int(sam.get("heads", default.num_heads)),
        mlp_dim=int(sam.get("mlp_dim", default.mlp_dim)),
        window_size=int(sam.get("window_size", default.window_size)),
        global_attn_indexes=tuple(int(i) for i in sam.get("global_attn_indexes", default.global_attn_indexes)),
        neck_channels=int(sam.get("neck_channels", default.neck_channels)),
        downsample_channels=(int(channels[0]), int(channels[1])),
    )


def _encoder_from_hf(enc: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]]) -> EncoderConfig:
    names = {f.name for f in dataclasses.fields(EncoderConfig)}
    values: dict[str, Any] = {k: enc[k] for k in names if k in enc}
    if "dim" in enc:
        values.setdefault("hidden_size", int(enc["dim"]))
    if "model.sam_model.net_3.weight" in shapes:
        values["hidden_size"] = shapes["model.sam_model.net_3.weight"][0]
    return EncoderConfig(**values)

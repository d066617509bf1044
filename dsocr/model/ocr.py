"""DeepseekOCR2ForCausalLM: vision tower + projector + view separator spliced into the MoE decoder.

Must not preprocess images or run a generation loop: it is a pure function of weights, pixel tensors,
token ids and the cache object passed in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dsocr.model.config import DeepseekOCR2Config
from dsocr.model.decoder import DeepseekV2Model, KVCache
from dsocr.model.qwen2_encoder import Qwen2FlowEncoder
from dsocr.model.sam import SamEncoder


class MlpProjector(nn.Module):
    """`model.projector`: a single linear layer for DeepSeek-OCR 2 (projector_type "linear")."""

    def __init__(self, input_dim: int, n_embed: int) -> None:
        super().__init__()
        self.layers = nn.Linear(input_dim, n_embed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DeepseekOCR2Model(DeepseekV2Model):
    def __init__(self, config: DeepseekOCR2Config) -> None:
        super().__init__(config.language)
        self.sam_model = SamEncoder(config.sam)
        self.qwen2_model = Qwen2FlowEncoder(config.encoder, config.num_queries_crop, config.num_queries_global)
        self.projector = MlpProjector(config.projector.input_dim, config.projector.n_embed)
        self.view_seperator = nn.Parameter(torch.zeros(config.language.hidden_size))  # (sic) checkpoint name

    def vision_to(self, dtype: torch.dtype) -> None:
        """Run the vision tower (SAM, the flow encoder, the projector, the separator) in `dtype`; the decoder
        keeps its own. Pixels go in as the tower's dtype and the embeddings are cast to the decoder's."""
        for part in (self.sam_model, self.qwen2_model, self.projector):
            part.to(dtype)
        self.view_seperator.data = self.view_seperator.data.to(dtype)

    def encode_views(self, pixels: torch.Tensor) -> torch.Tensor:
        """Square views (V, 3, S, S) -> visual embeddings (V, (S/64)^2, hidden)."""
        features = self.sam_model(pixels.to(self.view_seperator.dtype))  # (V, C, S/64, S/64)
        return self.projector(self.qwen2_model(features))

    def embed_images(self, global_views: torch.Tensor, crops: torch.Tensor,
                     num_crops: Sequence[int]) -> list[torch.Tensor]:
        """Visual sequences for I images: global_views (I, 3, B, B), crops (sum(num_crops), 3, T, T) in image
        order, each image's crops row-major. Returns per image [crops... , global, view_seperator] (N_i, hidden).
        All crops go through the tower as one batch, all global views as another."""
        if len(num_crops) != global_views.shape[0] or sum(num_crops) != crops.shape[0]:
            raise ValueError(f"num_crops {list(num_crops)} does not match {global_views.shape[0]} global "
                             f"views and {crops.shape[0]} crops")
        global_embeds = self.encode_views(global_views)  # (I, n_g, hidden)
        crop_embeds = self.encode_views(crops) if crops.shape[0] else None  # (K, n_c, hidden)
        separator = self.view_seperator[None]  # (1, hidden)
        sequences, offset = [], 0
        for i, k in enumerate(num_crops):
            parts = []
            if k:
                parts.append(crop_embeds[offset:offset + k].flatten(0, 1))  # (k * n_c, hidden)
            parts += [global_embeds[i], separator]
            sequences.append(torch.cat(parts))
            offset += k
        return sequences

    def embed_inputs(self, input_ids: torch.Tensor, image_mask: torch.Tensor | None = None,
                     image_embeds: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """Token embeddings with the image placeholder positions overwritten, in order, by the visual
        sequences. input_ids (B, T); image_mask (B, T) bool; image_embeds concatenated must fill the mask."""
        embeds = self.embed_tokens(input_ids)
        if image_mask is None or not image_embeds:
            return embeds
        visual = torch.cat(list(image_embeds)).to(embeds.dtype)
        count = int(image_mask.sum())
        if count != visual.shape[0]:
            raise ValueError(f"{count} image placeholder tokens but {visual.shape[0]} visual embeddings")
        return embeds.masked_scatter(image_mask[..., None], visual)


class DeepseekOCR2ForCausalLM(nn.Module):
    def __init__(self, config: DeepseekOCR2Config) -> None:
        super().__init__()
        self.config = config
        self.model = DeepseekOCR2Model(config)
        self.lm_head = nn.Linear(config.language.hidden_size, config.language.vocab_size, bias=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def new_cache(self, batch_size: int, max_length: int) -> KVCache:
        return KVCache(self.config.language, batch_size, max_length, self.dtype, self.device)

    def forward(self, inputs_embeds: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache | None = None, cache_start: int = 0,
                last_only: bool = False) -> torch.Tensor:
        """Logits (B, T or 1, vocab) in float32."""
        hidden = self.model.decode(inputs_embeds, positions, mask, cache, cache_start)
        if last_only:
            hidden = hidden[:, -1:]
        return self.lm_head(hidden).float()

"""`model.embed_tokens`, `model.layers.*`, `model.norm`: the DeepSeek-V2-style MoE language decoder (MHA).

Must not own generation state: the KV cache and the attention mask are arguments of `forward`. Attention
reads the cache through the cache object (`attend`), so the engine's paged cache plugs in without a second
model: this module's `KVCache` is the contiguous reference, `dsocr.engine.kv_cache` the paged one.
The routed experts run as a plain per-expert loop; it is the reference the fast engine is checked against
(`dsocr.engine.moe.use_grouped_experts` switches a model to grouped GEMMs).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dsocr.model.config import LanguageConfig
from dsocr.model.layers import RMSNorm, SwiGLU, apply_rotary, rotary_cos_sin


class KVCache:
    """Contiguous per-layer key/value buffers (B, H, max_length, D); the caller says where each step writes."""

    def __init__(self, config: LanguageConfig, batch_size: int, max_length: int,
                 dtype: torch.dtype, device: torch.device | str) -> None:
        shape = (batch_size, config.num_key_value_heads, max_length, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.max_length = max_length

    def update(self, layer: int, start: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = start + k.shape[2]
        if end > self.max_length:
            raise IndexError(f"KV cache of {self.max_length} positions cannot hold position {end - 1}")
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def keep(self, rows: torch.Tensor, length: int) -> None:
        """Keep only the batch rows `rows` (the sequences still generating), with their first `length` positions:
        a finished sequence stops costing work in every later step."""
        for buffers in (self.keys, self.values):
            for layer, old in enumerate(buffers):
                new = old.new_empty((len(rows), *old.shape[1:]))  # positions >= length are written before read
                new[:, :, :length] = old[rows, :, :length]
                buffers[layer] = new

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None, start: int) -> torch.Tensor:
        """Store this step's k/v (B, H_kv, T, D) at `start`, then attend q (B, H, T, D) over everything cached."""
        k, v = self.update(layer, start, k, v)
        return sdpa(q, k, v, mask)


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, *,
         causal: bool = False) -> torch.Tensor:
    """Scaled dot-product attention with grouped k/v heads repeated up to q's head count."""
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


class DeepseekV2Attention(nn.Module):
    """Plain multi-head attention with rotate-half RoPE on the whole head (no MLA in DeepSeek-OCR)."""

    def __init__(self, config: LanguageConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(hidden, self.num_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache | None, cache_start: int) -> torch.Tensor:
        q, k, v = self.project(x, cos, sin)
        if cache is None:
            out = sdpa(q, k, v, mask)
        else:
            out = cache.attend(self.layer_idx, q, k, v, mask, cache_start)  # (B, H, T, D)
        return self.output(out)

    def project(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x (B, T, C) -> q (B, H, T, D), k and v (B, H_kv, T, D), rotary applied to q and k."""
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def output(self, out: torch.Tensor) -> torch.Tensor:
        """Attention output (B, H, T, D) -> (B, T, C)."""
        b, _, t, _ = out.shape
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MoEGate(nn.Module):
    """Softmax router with greedy top-k; the chosen probabilities are not renormalised (norm_topk_prob False)."""

    def __init__(self, config: LanguageConfig) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.norm_topk_prob = config.norm_topk_prob
        self.scaling = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(config.n_routed_experts, config.hidden_size))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C) -> (weights (N, K) float32, expert ids (N, K))."""
        scores = F.linear(x.float(), self.weight.float()).softmax(dim=-1)  # (N, E), float32 as the reference
        weights, ids = torch.topk(scores, self.top_k, dim=-1, sorted=False)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
        return weights * self.scaling, ids


class DeepseekMoE(nn.Module):
    def __init__(self, config: LanguageConfig) -> None:
        super().__init__()
        self.gate = MoEGate(config)
        self.experts = nn.ModuleList(
            SwiGLU(config.hidden_size, config.moe_intermediate_size) for _ in range(config.n_routed_experts))
        self.shared_experts = SwiGLU(config.hidden_size, config.moe_intermediate_size * config.n_shared_experts)
        self.grouped: Callable[[torch.Tensor], torch.Tensor] | None = None  # dsocr.engine.moe, when switched on

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grouped is not None:
            return self.grouped(x)
        shape = x.shape
        h = x.reshape(-1, shape[-1])  # (N, C)
        weights, ids = self.gate(h)
        routed = torch.zeros(h.shape, dtype=torch.float32, device=h.device)
        for e in torch.unique(ids).tolist():
            rows, slots = (ids == e).nonzero(as_tuple=True)
            out = self.experts[e](h[rows]).float() * weights[rows, slots, None]
            routed.index_add_(0, rows, out)
        # Combine in float32, round once, then add the shared experts (the reference's order).
        return (routed.to(x.dtype) + self.shared_experts(h)).reshape(shape)


class DeepseekV2DecoderLayer(nn.Module):
    def __init__(self, config: LanguageConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = DeepseekV2Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp: nn.Module = (DeepseekMoE(config) if config.is_moe_layer(layer_idx)
                               else SwiGLU(config.hidden_size, config.intermediate_size))

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                cache: KVCache | None, cache_start: int) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, cache_start)
        return x + self.mlp(self.post_attention_layernorm(x))

    # The two halves around attention, for callers that run attention themselves (the engine compiles them).
    def attention_inputs(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.self_attn.project(self.input_layernorm(x), cos, sin)

    def after_attention(self, x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn.output(attention)
        return x + self.mlp(self.post_attention_layernorm(x))


class DeepseekV2Model(nn.Module):
    """Token embedding, decoder layers and final norm; subclassed by the OCR model to add the vision tower."""

    def __init__(self, config: LanguageConfig) -> None:
        super().__init__()
        self.language_config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DeepseekV2DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def decode(self, inputs_embeds: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None,
               cache: KVCache | None = None, cache_start: int = 0) -> torch.Tensor:
        """inputs_embeds (B, T, C), positions (B, T), mask (B, 1, T, start+T) bool (True = attend)
        -> hidden states (B, T, C) after the final norm. `cache` is any object with `KVCache.attend`'s
        signature; a paged cache carries its own layout and ignores `mask` and `cache_start`."""
        cfg = self.language_config
        cos, sin = rotary_cos_sin(positions, cfg.head_dim, cfg.rope_theta, inputs_embeds.dtype)
        x = inputs_embeds
        for layer in self.layers:
            x = layer(x, cos, sin, mask, cache, cache_start)
        return self.norm(x)

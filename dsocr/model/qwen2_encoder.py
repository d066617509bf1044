"""`model.qwen2_model.*`: the Qwen2-style causal-flow encoder that turns SAM features into query outputs.

Must not know about crops or the language model. Sequence = [visual tokens ; learned queries]; visual tokens
attend bidirectionally among themselves, queries attend to all visual tokens and causally to earlier
queries (a prefix-LM mask); only the query outputs, after the final norm, leave the encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsocr.errors import ConfigError
from dsocr.model.config import EncoderConfig
from dsocr.model.layers import RMSNorm, SwiGLU, apply_rotary, rotary_cos_sin


def flow_attention_mask(num_visual: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Additive (2n, 2n) mask: 0 where allowed, finfo.min where blocked (spec section 3.2)."""
    n = num_visual
    allowed = torch.zeros(2 * n, 2 * n, dtype=torch.bool, device=device)
    allowed[:, :n] = True  # everyone sees all visual tokens
    allowed[n:, n:] = torch.ones(n, n, dtype=torch.bool, device=device).tril()  # causal over queries
    mask = torch.zeros(2 * n, 2 * n, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


class Qwen2Attention(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        hidden, kv = config.hidden_size, self.num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(hidden, hidden, bias=True)
        self.k_proj = nn.Linear(hidden, kv, bias=True)
        self.v_proj = nn.Linear(hidden, kv, bias=True)
        self.o_proj = nn.Linear(hidden, hidden, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        groups = self.num_heads // self.num_kv_heads  # query head h reads KV head h // groups
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class Qwen2DecoderLayer(nn.Module):
    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Qwen2Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen2Stack(nn.Module):
    """`qwen2_model.model.model`: the stock decoder stack (layers + final norm), fed with embeddings."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(Qwen2DecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        positions = torch.arange(t, device=x.device).expand(b, t)
        cos, sin = rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta, x.dtype)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.norm(x)


class Qwen2FlowDecoder(nn.Module):
    """`qwen2_model.model`: a holder, kept only because the checkpoint nests `.model.model`."""

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.model = Qwen2Stack(config)


class Qwen2FlowEncoder(nn.Module):
    """`qwen2_model`: learned query tables for the two view sizes plus the stack."""

    def __init__(self, config: EncoderConfig, num_queries_crop: int, num_queries_global: int) -> None:
        super().__init__()
        self.query_768 = nn.Embedding(num_queries_crop, config.hidden_size)
        self.query_1024 = nn.Embedding(num_queries_global, config.hidden_size)
        self.model = Qwen2FlowDecoder(config)

    def queries_for(self, num_visual: int) -> torch.Tensor:
        # The query table is chosen by token count, as in the reference; the names keep their official sizes.
        for table in (self.query_768, self.query_1024):
            if table.num_embeddings == num_visual:
                return table.weight
        raise ConfigError(
            f"no learned causal-flow queries for a view of {num_visual} visual tokens; this model has "
            f"{self.query_768.num_embeddings} (crop view) and {self.query_1024.num_embeddings} (global view)")

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """SAM features (V, C, h, w) -> query outputs (V, h*w, C)."""
        v, c, h, w = features.shape
        n = h * w
        visual = features.flatten(2).transpose(1, 2)  # (V, n, C), row-major token order
        queries = self.queries_for(n).to(visual.dtype).expand(v, n, c)
        x = torch.cat([visual, queries], dim=1)  # (V, 2n, C)
        mask = flow_attention_mask(n, x.dtype, x.device)
        return self.model.model(x, mask)[:, n:]

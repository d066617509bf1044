"""`model.sam_model.*`: the SAM ViT-B vision tokenizer with 16x compression (neck, net_2, net_3).

Must not know about crops, prompts or the language model: it maps pixels (V, 3, S, S) to (V, C, S/64, S/64).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from dsocr.model.config import SamConfig
from dsocr.model.layers import LayerNorm2d


def resize_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """(1, g, g, C) -> (1, grid, grid, C) with antialiased bicubic in float32, as the reference."""
    if pos_embed.shape[1] == grid:
        return pos_embed
    x = pos_embed.permute(0, 3, 1, 2).float()  # (1, C, g, g)
    x = F.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False, antialias=True)
    return x.to(pos_embed.dtype).permute(0, 2, 3, 1)


def relative_position_table(rel_pos: torch.Tensor, size: int) -> torch.Tensor:
    """Table R[i, j] = P[i - j + size - 1] of shape (size, size, D), resizing P to 2*size-1 rows if needed."""
    rows = 2 * size - 1
    if rel_pos.shape[0] != rows:
        x = rel_pos.float().T[None]  # (1, D, L)
        x = F.interpolate(x, size=rows, mode="linear")
        rel_pos = x[0].T.to(rel_pos.dtype)  # (rows, D)
    coords = torch.arange(size, device=rel_pos.device)
    return rel_pos[coords[:, None] - coords[None, :] + size - 1]


class SamAttention(nn.Module):
    """Multi-head attention with SAM's decomposed relative-position bias."""

    def __init__(self, width: int, num_heads: int, rel_pos_size: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = width // num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=True)
        self.proj = nn.Linear(width, width, bias=True)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * rel_pos_size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * rel_pos_size - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # (3, B, H, hw, D)
        q, k, v = qkv.unbind(0)
        if q.is_cuda:
            out = self._augmented_attention(q, k, v, h, w)
        else:  # the reference form (CPU): the (hw, hw) bias materialised, bit-identical to the official code
            bias = self._rel_pos_bias(q, h, w)  # (B, H, hw, hw)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, hw, D)
        out = out.transpose(1, 2).reshape(b, h, w, c)
        return self.proj(out)

    def _augmented_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The same attention without materialising the bias: it becomes part of a dot product.
        bias[i, j] = bias_h[i, row(j)] + bias_w[i, col(j)] = [bias_h[i], bias_w[i]] . [onehot(row j), onehot(col j)],
        so q' = [q / sqrt(D), bias_h, bias_w] and k' = [k, onehots] give q'.k' = q.k / sqrt(D) + bias with no mask,
        and SDPA runs its flash kernel. The bias of a global layer at 1024 px would be 400 MB per image."""
        b, heads, n, d = q.shape
        r_h = relative_position_table(self.rel_pos_h, h)
        r_w = relative_position_table(self.rel_pos_w, w)
        rq = q.reshape(b, heads, h, w, d)
        bias_h = torch.einsum("bnhwc,hkc->bnhwk", rq, r_h).reshape(b, heads, n, h)
        bias_w = torch.einsum("bnhwc,wkc->bnhwk", rq, r_w).reshape(b, heads, n, w)
        index = torch.arange(n, device=q.device)
        keys = torch.cat([F.one_hot(index // w, h), F.one_hot(index % w, w)], dim=-1).to(k.dtype)  # (n, h + w)
        pad = -(d + h + w) % 8  # flash kernels want head dims in multiples of 8
        q2 = F.pad(torch.cat([q * d**-0.5, bias_h, bias_w], dim=-1), (0, pad))
        k2 = F.pad(torch.cat([k, keys.expand(b, heads, n, h + w)], dim=-1), (0, pad))
        v2 = F.pad(v, (0, h + w + pad))
        return F.scaled_dot_product_attention(q2, k2, v2, scale=1.0)[..., :d]

    def _rel_pos_bias(self, q: torch.Tensor, h: int, w: int) -> torch.Tensor:
        # The bias uses the unscaled queries; SDPA adds it after scaling q.k by 1/sqrt(D).
        b, heads, _, d = q.shape
        r_h = relative_position_table(self.rel_pos_h, h)  # (h, h, D)
        r_w = relative_position_table(self.rel_pos_w, w)  # (w, w, D)
        rq = q.reshape(b, heads, h, w, d)
        bias_h = torch.einsum("bnhwc,hkc->bnhwk", rq, r_h)  # (B, H, h, w, h)
        bias_w = torch.einsum("bnhwc,wkc->bnhwk", rq, r_w)  # (B, H, h, w, w)
        bias = bias_h[..., :, None] + bias_w[..., None, :]  # (B, H, h, w, h, w)
        return bias.reshape(b, heads, h * w, h * w)


class SamMLP(nn.Module):
    def __init__(self, width: int, mlp_dim: int) -> None:
        super().__init__()
        self.lin1 = nn.Linear(width, mlp_dim)
        self.lin2 = nn.Linear(mlp_dim, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin2(F.gelu(self.lin1(x)))


def window_partition(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(B, h, w, C) -> (B * n_windows, window, window, C), zero-padding bottom/right (pads are NOT masked)."""
    b, h, w, c = x.shape
    pad_h, pad_w = (window - h % window) % window, (window - w % window) % window
    x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.reshape(b, hp // window, window, wp // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window, window, c), (hp, wp)


def window_unpartition(windows: torch.Tensor, window: int, padded: tuple[int, int],
                       size: tuple[int, int]) -> torch.Tensor:
    hp, wp = padded
    b = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.reshape(b, hp // window, wp // window, window, window, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hp, wp, -1)[:, : size[0], : size[1]]


class SamBlock(nn.Module):
    """Pre-norm transformer block; window attention unless `window == 0` (global)."""

    def __init__(self, config: SamConfig, window: int) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.attn = SamAttention(config.width, config.num_heads, window or config.grid_size)
        self.norm2 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.mlp = SamMLP(config.width, config.mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        size = (h.shape[1], h.shape[2])
        if self.window and size != (self.window, self.window):  # a window-sized input is one window already
            windows, padded = window_partition(h, self.window)
            h = window_unpartition(self.attn(windows), self.window, padded, size)
        else:  # global, or one window (dsocr.engine.sam_windows runs the blocks on windows)
            h = self.attn(h)
        x = x + h
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)  # (B, G, G, C)


class SamEncoder(nn.Module):
    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(config.patch_size, config.width)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid_size, config.grid_size, config.width))
        self.blocks = nn.ModuleList(
            SamBlock(config, 0 if i in config.global_attn_indexes else config.window_size)
            for i in range(config.depth)
        )
        neck = config.neck_channels
        self.neck = nn.Sequential(
            nn.Conv2d(config.width, neck, kernel_size=1, bias=False),
            LayerNorm2d(neck, eps=config.layer_norm_eps),
            nn.Conv2d(neck, neck, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(neck, eps=config.layer_norm_eps),
        )
        mid, out = config.downsample_channels
        self.net_2 = nn.Conv2d(neck, mid, kernel_size=3, stride=2, padding=1, bias=False)
        self.net_3 = nn.Conv2d(mid, out, kernel_size=3, stride=2, padding=1, bias=False)
        # patch embeddings -> the blocks' output, when switched on (dsocr.engine.sam_windows)
        self.blocks_runner: Callable[[torch.Tensor], torch.Tensor] | None = None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(pixels)  # (V, G, G, C)
        x = self.run_blocks(patches) if self.blocks_runner is None else self.blocks_runner(patches)
        x = self.neck(x.permute(0, 3, 1, 2))  # (V, 256, G, G)
        return self.net_3(self.net_2(x))  # (V, C_out, G/4, G/4)

    def run_blocks(self, patches: torch.Tensor) -> torch.Tensor:
        x = patches + resize_pos_embed(self.pos_embed, patches.shape[1])
        for block in self.blocks:
            x = block(x)
        return x

"""The engine's paged KV cache: a pool of fixed-size blocks shared by all requests, and the per-forward views
of it that the model's attention layers read (`PrefillBatch`, `DecodeBatch`).

Must not schedule: which request owns which blocks is decided by the engine (`BlockAllocator` only hands
out and takes back block ids). Block 0 is never handed out: padding rows of a CUDA-graph batch write there.

Why paged: a request's cache is prompt (~1.1k tokens for a 6-crop page) plus its token limit, which varies
per request (a slide needs 300 tokens, a dense page 8k). Blocks let each request hold what it asked for,
with no fragmentation, so a memory budget admits as many requests as truly fit (see docs/engine-notes.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dsocr.model.config import LanguageConfig
from dsocr.model.decoder import sdpa

BLOCK_SIZE = 64  # tokens per block: one (64, head_dim) tile per head, what the decode kernel loads at once


class PagedKVCache:
    """Per layer, keys and values of shape (num_blocks, H_kv, block_size, D): each block's tile per head is
    contiguous, so a decode kernel reads it in one coalesced load."""

    def __init__(self, config: LanguageConfig, num_blocks: int, *, block_size: int = BLOCK_SIZE,
                 dtype: torch.dtype, device: torch.device | str) -> None:
        if num_blocks < 2:
            raise ValueError(f"a paged cache needs at least 2 blocks (block 0 is scratch), got {num_blocks}")
        shape = (num_blocks, config.num_key_value_heads, block_size, config.head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.num_hidden_layers)]
        self.num_blocks, self.block_size = num_blocks, block_size

    @staticmethod
    def bytes_per_block(config: LanguageConfig, block_size: int, dtype: torch.dtype) -> int:
        per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim
        return per_token * block_size * torch.empty((), dtype=dtype).element_size()

    def write(self, layer: int, blocks: torch.Tensor, offsets: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor) -> None:
        """Store token i's k/v (N, H_kv, D) at (blocks[i], offsets[i]); no host sync, graph-capturable."""
        self.keys[layer][blocks, :, offsets] = k
        self.values[layer][blocks, :, offsets] = v


class BlockAllocator:
    """Host-side free list of block ids 1..num_blocks-1."""

    def __init__(self, num_blocks: int) -> None:
        self._free = list(range(num_blocks - 1, 0, -1))  # pop() hands out low ids first
        self.capacity = num_blocks - 1
        self.peak_used = 0

    @property
    def num_free(self) -> int:
        return len(self._free)

    def allocate(self, n: int) -> list[int]:
        if n > len(self._free):
            raise MemoryError(f"{n} KV blocks asked, {len(self._free)} free")
        blocks = [self._free.pop() for _ in range(n)]
        self.peak_used = max(self.peak_used, self.capacity - len(self._free))
        return blocks

    def free(self, blocks: list[int]) -> None:
        self._free.extend(reversed(blocks))


def blocks_for(tokens: int, block_size: int = BLOCK_SIZE) -> int:
    return math.ceil(tokens / block_size)


@dataclass(eq=False)
class PrefillBatch:
    """Several prompts packed into one (1, T) row: attention is causal within each segment, each prompt's
    k/v go to its blocks. `segments` are host ints (start, end) into the packed row."""

    cache: PagedKVCache
    blocks: torch.Tensor  # (T,) block id of each token
    offsets: torch.Tensor  # (T,) position inside the block
    segments: list[tuple[int, int]]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None, start: int) -> torch.Tensor:
        """q (1, H, T, D), k/v (1, H_kv, T, D) -> (1, H, T, D)."""
        self.cache.write(layer, self.blocks, self.offsets, k[0].transpose(0, 1), v[0].transpose(0, 1))
        # One causal SDPA per prompt (flash kernel on CUDA); a block-diagonal mask would disable it.
        return torch.cat([sdpa(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], None, causal=True)
                          for s, e in self.segments], dim=2)


@dataclass(eq=False)
class DecodeBatch:
    """One new token per row. Row r attends over its first `lengths[r]` cached tokens (the new one included),
    found through `block_tables[r]`. Padding rows have length 1 and block table 0 (the scratch block)."""

    cache: PagedKVCache
    blocks: torch.Tensor  # (B,) where the new token's k/v go
    offsets: torch.Tensor  # (B,)
    block_tables: torch.Tensor  # (B, max_blocks) int32
    lengths: torch.Tensor  # (B,) int32
    kernel: str = "torch"  # "triton" (CUDA) or "torch" (anywhere: gathers the blocks, then SDPA)
    max_length: int | None = None  # torch path: a host bound on lengths, to gather fewer blocks

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None, start: int) -> torch.Tensor:
        """q (B, H, 1, D), k/v (B, H_kv, 1, D) -> (B, H, 1, D)."""
        self.cache.write(layer, self.blocks, self.offsets, k[:, :, 0], v[:, :, 0])
        keys, values = self.cache.keys[layer], self.cache.values[layer]
        if self.kernel == "triton":
            from dsocr.engine.attention import paged_decode_attention
            return paged_decode_attention(q[:, :, 0], keys, values, self.block_tables, self.lengths)[:, :, None]
        return gathered_decode_attention(q, keys, values, self.block_tables, self.lengths, self.max_length)


def gathered_decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, block_tables: torch.Tensor,
                              lengths: torch.Tensor, max_length: int | None = None) -> torch.Tensor:
    """The plain decode path: gather each row's blocks into a contiguous (B, H, L, D), mask beyond its length,
    SDPA. q (B, H, 1, D) -> (B, H, 1, D)."""
    block_size = keys.shape[2]
    n = block_tables.shape[1] if max_length is None else min(block_tables.shape[1], blocks_for(max_length, block_size))
    table = block_tables[:, :n].long()
    b, h_kv, d = q.shape[0], keys.shape[1], keys.shape[3]
    k = keys[table].permute(0, 2, 1, 3, 4).reshape(b, h_kv, n * block_size, d)
    v = values[table].permute(0, 2, 1, 3, 4).reshape(b, h_kv, n * block_size, d)
    valid = torch.arange(n * block_size, device=q.device)[None] < lengths.clamp(min=1)[:, None].long()
    return sdpa(q, k, v, valid[:, None, None])

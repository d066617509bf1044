"""Paged decode attention as a Triton kernel (flash-decoding: each row's context is split across programs,
partial softmax states are combined after), for CUDA; `kv_cache.gathered_decode_attention` is its reference.

Must not allocate per-request state or sync with the host: it runs inside captured CUDA graphs, with static
shapes (the block table is as wide as the longest possible context; each program loops only over the
blocks a row really has).

Why split: one page alone is 10 heads, so one program per (row, head) would leave 122 of the H100's 132 SMs
idle while each walks ~35 blocks in sequence. Splitting the blocks of a row round-robin over S programs
keeps every SM busy at any batch size.
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl


@triton.jit
def _attend_block(q, k_ptr, v_ptr, table_ptr, b, i, length, kv_head, m, l, acc, stride_kb, stride_kh, stride_kt,
                  stride_tb, BLOCK: tl.constexpr, D: tl.constexpr):
    """Fold block i of row b into the running softmax state (m, l, acc)."""
    d = tl.arange(0, D)
    t = tl.arange(0, BLOCK)
    block = tl.load(table_ptr + b * stride_tb + i).to(tl.int64)
    tile = block * stride_kb + kv_head * stride_kh + t[:, None] * stride_kt + d[None, :]
    k = tl.load(k_ptr + tile).to(tl.float32)  # (BLOCK, D)
    scores = tl.sum(k * q[None, :], axis=1)
    scores = tl.where(i * BLOCK + t < length, scores, float("-inf"))
    m_new = tl.maximum(m, tl.max(scores, axis=0))
    alpha = tl.exp(m - m_new)
    p = tl.exp(scores - m_new)
    v = tl.load(v_ptr + tile).to(tl.float32)
    return m_new, l * alpha + tl.sum(p, axis=0), acc * alpha + tl.sum(p[:, None] * v, axis=0)


@triton.jit
def _decode_split_kernel(q_ptr, k_ptr, v_ptr, table_ptr, len_ptr, acc_ptr, m_ptr, l_ptr, out_ptr, scale,
                         stride_qb, stride_qh, stride_kb, stride_kh, stride_kt, stride_tb, stride_ob, stride_oh,
                         num_heads, num_splits, GROUPS: tl.constexpr, BLOCK: tl.constexpr, D: tl.constexpr,
                         ITERS: tl.constexpr, INTERPRET: tl.constexpr, DIRECT: tl.constexpr):
    b, h, s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    kv_head = h // GROUPS
    length = tl.load(len_ptr + b)
    d = tl.arange(0, D)
    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + d).to(tl.float32) * scale
    m = tl.max(tl.full([BLOCK], float("-inf"), tl.float32), axis=0)  # running max, as a 0-d tensor
    l = tl.sum(tl.zeros([BLOCK], tl.float32), axis=0)  # running softmax denominator
    acc = tl.zeros([D], tl.float32)
    n_blocks = (length + BLOCK - 1) // BLOCK
    if INTERPRET:  # Triton's CPU interpreter cannot take a loop bound read from memory
        for j in range(ITERS):
            i = s + j * num_splits
            if i < n_blocks:
                m, l, acc = _attend_block(q, k_ptr, v_ptr, table_ptr, b, i, length, kv_head, m, l, acc, stride_kb,
                                          stride_kh, stride_kt, stride_tb, BLOCK, D)
    else:  # this program's blocks s, s+S, s+2S, ...: a plain loop the compiler can pipeline
        for i in range(s, n_blocks, num_splits):
            m, l, acc = _attend_block(q, k_ptr, v_ptr, table_ptr, b, i, length, kv_head, m, l, acc, stride_kb,
                                      stride_kh, stride_kt, stride_tb, BLOCK, D)
    if DIRECT:  # one split: normalise and write the output here, no combine pass
        out = acc / tl.maximum(l, 1e-30)
        tl.store(out_ptr + b * stride_ob + h * stride_oh + d, out.to(out_ptr.dtype.element_ty))
    else:
        row = (b * num_heads + h) * num_splits + s
        tl.store(acc_ptr + row * D + d, acc)
        tl.store(m_ptr + row, m)
        tl.store(l_ptr + row, l)


@triton.jit
def _combine_kernel(acc_ptr, m_ptr, l_ptr, out_ptr, stride_ob, stride_oh, num_heads, num_splits,
                    SPLITS: tl.constexpr, D: tl.constexpr):
    """Merge the splits' partial softmax states of one (row, head); splits that saw no token have m = -inf."""
    b, h = tl.program_id(0), tl.program_id(1)
    d = tl.arange(0, D)
    s = tl.arange(0, SPLITS)
    valid = s < num_splits
    first = (b * num_heads + h) * num_splits
    m = tl.load(m_ptr + first + s, mask=valid, other=float("-inf"))
    l = tl.load(l_ptr + first + s, mask=valid, other=0.0)
    top = tl.max(m, axis=0)
    top = tl.where(top == float("-inf"), 0.0, top)
    w = tl.exp(m - top)
    acc = tl.load(acc_ptr + (first + s)[:, None] * D + d[None, :], mask=valid[:, None], other=0.0)
    out = tl.sum(acc * w[:, None], axis=0) / tl.maximum(tl.sum(l * w, axis=0), 1e-30)
    tl.store(out_ptr + b * stride_ob + h * stride_oh + d, out.to(out_ptr.dtype.element_ty))


def num_splits_for(batch: int, heads: int, max_blocks: int, device: torch.device) -> int:
    """Enough programs for about two waves over the SMs, never more splits than blocks."""
    sms = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 8
    return max(1, min(max_blocks, math.ceil(2 * sms / (batch * heads))))


def paged_decode_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, block_tables: torch.Tensor,
                           lengths: torch.Tensor, num_splits: int | None = None) -> torch.Tensor:
    """q (B, H, D); keys/values (num_blocks, H_kv, BLOCK, D); block_tables (B, max_blocks) int32; lengths (B,)
    int32 (rows of length 0 give zeros) -> (B, H, D) in q's dtype."""
    b, h, d = q.shape
    _, h_kv, block, _ = keys.shape
    splits = num_splits or num_splits_for(b, h, block_tables.shape[1], q.device)
    out = torch.empty(b, h, d, dtype=q.dtype, device=q.device)
    acc = torch.empty(b, h, splits, d, dtype=torch.float32, device=q.device)
    m = torch.empty(b, h, splits, dtype=torch.float32, device=q.device)
    l = torch.empty(b, h, splits, dtype=torch.float32, device=q.device)
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    iters = math.ceil(block_tables.shape[1] / splits) if interpret else 0  # the interpreter's static loop bound
    _decode_split_kernel[(b, h, splits)](
        q, keys, values, block_tables, lengths, acc, m, l, out, 1.0 / math.sqrt(d),
        q.stride(0), q.stride(1), keys.stride(0), keys.stride(1), keys.stride(2), block_tables.stride(0),
        out.stride(0), out.stride(1), h, splits, GROUPS=h // h_kv, BLOCK=block, D=d, ITERS=iters,
        INTERPRET=interpret, DIRECT=splits == 1, num_warps=4, num_stages=2)
    if splits > 1:
        _combine_kernel[(b, h)](acc, m, l, out, out.stride(0), out.stride(1), h, splits,
                                SPLITS=triton.next_power_of_2(splits), D=d, num_warps=4)
    return out

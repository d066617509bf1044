"""Grouped MoE: all routed experts of a layer as two grouped GEMMs instead of a Python loop over experts.

Must compute what `dsocr.model.decoder.DeepseekMoE` computes (same router, same float32 combine, same
order of rounding) and is tested against it; only the expert products are batched. The experts' weights are
packed once into two stacked tensors, and each expert's `nn.Linear` weights become views into them, so packing
costs no extra memory and the model keeps its parameter names.

Why: the reference loop launches about ten kernels per active expert and syncs the host (`torch.unique`) in
every layer; a decode batch of 128 pages touches all 64 experts of each of 11 MoE layers. Tokens are sorted by
expert instead, and `torch._grouped_mm` (a grouped GEMM; CUDA bf16 on Hopper, any dtype on CPU) runs each
expert over its contiguous slice of rows. Where `torch._grouped_mm` is missing or refuses the dtype, a loop
over the slices of the sorted rows is used (a graph-safe masked form inside CUDA graph capture).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsocr.model.decoder import DeepseekMoE

HAS_GROUPED_MM = hasattr(torch, "_grouped_mm")


class GroupedExperts:
    """The routed experts of one `DeepseekMoE`, packed: gate and up as (E, C, 2I), down as (E, I, C)."""

    def __init__(self, moe: DeepseekMoE) -> None:
        self.moe = moe
        experts = list(moe.experts)
        self.num_experts = len(experts)
        self.intermediate = experts[0].gate_proj.weight.shape[0]
        with torch.no_grad():
            gate_up = torch.stack([torch.cat([e.gate_proj.weight, e.up_proj.weight]) for e in experts])  # (E, 2I, C)
            down = torch.stack([e.down_proj.weight for e in experts])  # (E, C, I)
        for i, expert in enumerate(experts):  # the modules now read the packed storage: no second copy
            expert.gate_proj.weight.data = gate_up[i, : self.intermediate]
            expert.up_proj.weight.data = gate_up[i, self.intermediate:]
            expert.down_proj.weight.data = down[i]
        # Row-major (K, N) operands for x @ w: the transposed views of (N, K) Linear weights, made contiguous
        # once where the grouped GEMM needs it.
        self.w13 = gate_up.transpose(1, 2)
        self.w2 = down.transpose(1, 2)
        self.use_grouped_mm = grouped_mm_works(gate_up.device, gate_up.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        moe, shape = self.moe, x.shape
        h = x.reshape(-1, shape[-1])  # (N, C)
        weights, ids = moe.gate(h)  # (N, K) float32, (N, K)
        top_k = ids.shape[1]
        flat = ids.reshape(-1)
        order = flat.argsort(stable=True)  # routed rows grouped by expert, token order kept within an expert
        rows = order // top_k
        # Counts by scatter, not bincount: bincount asks the host for the largest id (a sync that would also
        # break CUDA graph capture).
        counts = torch.zeros(self.num_experts, dtype=torch.int64, device=h.device)
        ends = counts.scatter_add_(0, flat, torch.ones_like(flat)).cumsum(0).to(torch.int32)
        xs = h.index_select(0, rows)  # (N*K, C)
        a = _grouped(xs, self.w13, ends, self.use_grouped_mm)  # (N*K, 2I)
        act = F.silu(a[:, : self.intermediate]) * a[:, self.intermediate:]
        out = _grouped(act.contiguous(), self.w2, ends, self.use_grouped_mm).float() * weights.reshape(-1)[order, None]
        routed = torch.zeros(h.shape, dtype=torch.float32, device=h.device).index_add_(0, rows, out)
        return (routed.to(x.dtype) + moe.shared_experts(h)).reshape(shape)


def grouped_mm_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether `torch._grouped_mm` takes this device and dtype (asked once per layer, at packing time, so the
    hot path has no try/except: torch.compile traces it straight)."""
    if not HAS_GROUPED_MM or (device.type == "cuda" and dtype != torch.bfloat16):
        return False  # on CUDA it is a bf16 kernel; other dtypes fall back inside it, copying to the host
    x = torch.zeros(4, 16, device=device, dtype=dtype)
    w = torch.zeros(2, 16, 16, device=device, dtype=dtype)
    try:
        torch._grouped_mm(x, w, offs=torch.tensor([2, 4], dtype=torch.int32, device=device))
    except Exception:  # noqa: BLE001 - whatever the kernel objects to, the loop below works
        return False
    return True


def _grouped(x: torch.Tensor, w: torch.Tensor, ends: torch.Tensor, use_grouped_mm: bool) -> torch.Tensor:
    """Rows ends[g-1]:ends[g] of x times w[g], for every group g."""
    if use_grouped_mm:
        return torch._grouped_mm(x, w, offs=ends)
    if x.device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        return _grouped_static(x, w, ends)
    out = x.new_empty((x.shape[0], w.shape[2]))
    start = 0
    for g, end in enumerate(ends.tolist()):
        if end > start:
            out[start:end] = x[start:end] @ w[g]
        start = end
    return out


def _grouped_static(x: torch.Tensor, w: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """The same with no data-dependent shapes (inside CUDA graph capture, for dtypes the grouped GEMM lacks):
    every group's product over all rows, each row keeping its own group's. E times the work; test-sized only."""
    row = torch.arange(x.shape[0], device=x.device)
    group = torch.searchsorted(ends, row.to(ends.dtype), right=True)  # (N,) the group of each row
    out = x.new_zeros((x.shape[0], w.shape[2]))
    for g in range(w.shape[0]):
        out += (x @ w[g]) * (group == g)[:, None]
    return out


def use_grouped_experts(model: nn.Module) -> int:
    """Switch every MoE layer of `model` to grouped experts; returns how many layers were switched."""
    switched = 0
    for module in model.modules():
        if isinstance(module, DeepseekMoE) and module.grouped is None:
            module.grouped = GroupedExperts(module)
            switched += 1
    return switched

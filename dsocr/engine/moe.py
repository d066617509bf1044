"""Grouped MoE: all routed experts of a layer as two grouped GEMMs instead of a Python loop over experts.

Must compute what `dsocr.model.decoder.DeepseekMoE` computes (same router, same float32 combine, same
order of rounding) and is tested against it; only the expert products are batched. The experts' weights are
packed once into two stacked tensors, and each expert's `nn.Linear` weights become views into them, so packing
costs no extra memory and the model keeps its parameter names.

Why: the reference loop launches about ten kernels per active expert and syncs the host (`torch.unique`) in
every layer; a decode batch of 128 pages touches all 64 experts of each of 11 MoE layers. Tokens are sorted by
expert instead, and `torch._grouped_mm` (a grouped GEMM; CUDA bf16 on Hopper, any dtype on CPU) runs each
expert over its contiguous slice of rows. Where `torch._grouped_mm` is missing, a loop over the slices of the
sorted rows is used (still no host sync for routing).
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

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        moe, shape = self.moe, x.shape
        h = x.reshape(-1, shape[-1])  # (N, C)
        weights, ids = moe.gate(h)  # (N, K) float32, (N, K)
        top_k = ids.shape[1]
        flat = ids.reshape(-1)
        order = flat.argsort(stable=True)  # routed rows grouped by expert, token order kept within an expert
        rows = order // top_k
        ends = torch.bincount(flat, minlength=self.num_experts).cumsum(0).to(torch.int32)
        xs = h.index_select(0, rows)  # (N*K, C)
        a = _grouped(xs, self.w13, ends)  # (N*K, 2I)
        act = F.silu(a[:, : self.intermediate]) * a[:, self.intermediate:]
        out = _grouped(act.contiguous(), self.w2, ends).float() * weights.reshape(-1)[order, None]
        routed = torch.zeros(h.shape, dtype=torch.float32, device=h.device).index_add_(0, rows, out)
        return (routed.to(x.dtype) + moe.shared_experts(h)).reshape(shape)


def _grouped(x: torch.Tensor, w: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
    """Rows ends[g-1]:ends[g] of x times w[g], for every group g."""
    if HAS_GROUPED_MM and (x.device.type == "cuda" or x.dtype == torch.float32):
        try:
            return torch._grouped_mm(x, w, offs=ends)
        except RuntimeError:  # layout or dtype the kernel does not take: the plain path below
            pass
    out = x.new_empty((x.shape[0], w.shape[2]))
    start = 0
    for g, end in enumerate(ends.tolist()):
        if end > start:
            out[start:end] = x[start:end] @ w[g]
        start = end
    return out


def use_grouped_experts(model: nn.Module) -> int:
    """Switch every MoE layer of `model` to grouped experts; returns how many layers were switched."""
    switched = 0
    for module in model.modules():
        if isinstance(module, DeepseekMoE) and module.grouped is None:
            module.grouped = GroupedExperts(module)
            switched += 1
    return switched

"""Decoding on the CPU: the reference loop's model with two of its layers run the way small batches want.

Must compute what the reference modules compute, up to float32 rounding (tested against them); the parameter
names and the checkpoint do not change. Why: a CPU decoding step of the embedded model feeds a few rows (the
views of a page) through layers 256 wide, where each kernel call costs more than its arithmetic.

- `DenseExperts`: for up to `max_tokens` rows, every routed expert on every row as two batched GEMMs, weighted by
  the router (zero for an expert a row did not choose), instead of the per-expert loop's ~10 kernels per expert
  and a host sync per layer. Beyond that, the grouped experts (dsocr.engine.moe) take over: dense would do
  experts/top_k times the work.
- `PackedLinear`: the LM head with its weight reordered once for oneDNN. MKL's GEMM on a handful of rows against
  a (vocab, hidden) weight re-packs the weight at every call (1.7 ms a step for the embedded model's 6780 x 256 on
  an AVX2 EPYC; 0.3 ms packed). It keeps a second copy of the head's weight, made when it is switched on: switch
  a model that is already on its device and in its dtype, and do not train it afterwards.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from dsocr.engine.moe import GroupedExperts
from dsocr.model.decoder import DeepseekMoE

DENSE_MAX_TOKENS = 32  # rows up to which every expert runs on every row


class DenseExperts(GroupedExperts):
    """The routed experts of one `DeepseekMoE`, all of them on every row of a small batch."""

    def __init__(self, moe: DeepseekMoE, max_tokens: int = DENSE_MAX_TOKENS) -> None:
        super().__init__(moe)
        self.max_tokens = max_tokens

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        moe, shape = self.moe, x.shape
        h = x.reshape(-1, shape[-1])  # (N, C)
        if h.shape[0] > self.max_tokens:
            return super().__call__(x)
        weights, ids = moe.gate(h)  # (N, K) float32
        dense = torch.zeros(h.shape[0], self.num_experts, dtype=torch.float32, device=h.device)
        dense.scatter_(1, ids, weights)  # (N, E): the router's weight of each expert, 0 where not chosen
        a = torch.matmul(h, self.w13)  # (E, N, 2I)
        act = F.silu(a[..., : self.intermediate]) * a[..., self.intermediate:]
        out = torch.bmm(act, self.w2).float()  # (E, N, C)
        routed = torch.einsum("ne,enc->nc", dense, out)
        return (routed.to(x.dtype) + moe.shared_experts(h)).reshape(shape)


class PackedLinear(nn.Linear):
    """A bias-free `nn.Linear` whose float32 weight is also held reordered for oneDNN's GEMM."""

    def __init__(self, linear: nn.Linear, batch_hint: int = 8) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=False, device="meta")  # no throwaway weight
        self.weight = linear.weight
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), batch_hint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(rows, self.packed, None, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)


@functools.cache
def onednn_packing() -> bool:
    """Whether this torch build packs a float32 CPU weight for oneDNN and gets the right answer with it (asked
    once; the probe's numbers are fixed, so asking draws nothing from torch's random generator)."""
    if not torch.backends.mkldnn.is_available():
        return False
    probe = nn.Linear(16, 8, bias=False, device="meta")
    probe.weight = nn.Parameter(torch.linspace(-1, 1, 128).reshape(8, 16), requires_grad=False)
    x = torch.linspace(-2, 2, 48).reshape(3, 16)
    try:
        got = PackedLinear(probe)(x)
    except (RuntimeError, AttributeError):  # an op missing from this build
        return False
    return torch.allclose(got, probe(x), rtol=1e-4, atol=1e-5)


def use_cpu_decoding(model: nn.Module) -> dict[str, int]:
    """Switch a CPU model's MoE layers to `DenseExperts` and its LM head to `PackedLinear` (float32 only).
    Returns what was switched; calling it again switches nothing."""
    switched = {"experts": 0, "lm_head": 0}
    for module in model.modules():
        if isinstance(module, DeepseekMoE) and module.grouped is None:
            module.grouped = DenseExperts(module)
            switched["experts"] += 1
    head = getattr(model, "lm_head", None)
    if (isinstance(head, nn.Linear) and not isinstance(head, PackedLinear) and head.bias is None
            and head.weight.device.type == "cpu" and head.weight.dtype == torch.float32 and onednn_packing()):
        model.lm_head = PackedLinear(head)
        switched["lm_head"] = 1
    return switched

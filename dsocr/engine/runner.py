"""ModelRunner: the device half of the engine. It owns the paged cache and the per-row state of the decode
batch on the device, runs packed prefills, and runs decode steps (as CUDA graphs per batch-size bucket).

Must not decide anything: which requests run, when they finish and which blocks they get is the engine's
business (`dsocr.engine.engine`); the runner is told rows, tokens and block tables.

A decode step never waits for the host. Row r's next input token, position, block table, guard history and
loop counters all live on the device; the step writes the sampled token straight back into the input
buffer, and the host reads tokens one step late through a pinned copy.

On CUDA the two halves of each decoder layer around attention are compiled (torch.compile, dynamic batch size):
a decode step of one page is ~900 small kernels in eager mode, launch-bound at ~2.6 ms; fused it is a third
of that. Attention itself (the paged cache) stays our Triton kernel, called between the halves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dsocr.engine.guard import push_history, update_loop_runs, windowed_ngram_bans
from dsocr.engine.kv_cache import DecodeBatch, PagedKVCache, PrefillBatch, blocks_for
from dsocr.generation.repetition import MAX_PERIOD, loop_span
from dsocr.model.decoder import DeepseekV2DecoderLayer
from dsocr.model.layers import rotary_cos_sin
from dsocr.model.ocr import DeepseekOCR2ForCausalLM

logger = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256)


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """One windowed n-gram guard setting; the decode step applies each registered one to its rows."""

    ngram_size: int
    window: int
    whitelist: tuple[int, ...]


@dataclass(slots=True)
class StepOutput:
    """What the host reads back from one prefill or decode: tokens and loop flags of `rows`, once `event` is
    done. `owners[i]` is the request that owned row i when the step was launched."""

    owners: list
    tokens: torch.Tensor  # (B,) int64 on the host
    loops: torch.Tensor  # (B,) bool on the host
    event: torch.cuda.Event | None

    def wait(self) -> None:
        if self.event is not None:
            self.event.synchronize()


def layer_inputs(layer: DeepseekV2DecoderLayer, x: torch.Tensor, cos: torch.Tensor,
                 sin: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return layer.attention_inputs(x, cos, sin)


def layer_outputs(layer: DeepseekV2DecoderLayer, x: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    return layer.after_attention(x, attention)


class ModelRunner:
    def __init__(self, model: DeepseekOCR2ForCausalLM, *, num_blocks: int, max_batch: int,
                 cuda_graphs: bool, attention: str, compile_layers: bool = False) -> None:
        cfg = model.config.language
        self.model, self.device = model, model.device
        self.vocab_size = cfg.vocab_size
        self.max_batch = max_batch
        self.cache = PagedKVCache(cfg, num_blocks, dtype=model.dtype, device=self.device)
        self.max_blocks = blocks_for(cfg.max_position_embeddings)
        self.attention = attention
        self.buckets = [b for b in BUCKETS if b < max_batch] + [max_batch]
        self.guards: list[GuardConfig] = []
        self._whitelists: list[torch.Tensor] = []
        self.history_len = max(MAX_PERIOD + 1, 1)
        self._alloc_rows()
        self.use_graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs: dict[tuple[int, bool], torch.cuda.CUDAGraph] = {}
        self._pool = None
        # bf16/fp16 only: Inductor's grouped GEMM takes no float32 (float32 on CUDA is for tests: eager).
        self.compiled = compile_layers and self.device.type == "cuda" and model.dtype in (torch.bfloat16,
                                                                                           torch.float16)
        self._layer_inputs, self._layer_outputs = layer_inputs, layer_outputs
        if self.compiled:
            # One compiled function serves all 12 layers (dense and MoE: a few cache entries, not one per layer).
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            self._layer_inputs = torch.compile(layer_inputs, dynamic=True)
            self._layer_outputs = torch.compile(layer_outputs, dynamic=True)

    # --- per-row device state -------------------------------------------------------------------------
    def _alloc_rows(self) -> None:
        r, d = self.max_batch, self.device
        self.tokens = torch.zeros(r, dtype=torch.int64, device=d)
        self.positions = torch.zeros(r, dtype=torch.int64, device=d)
        self.active = torch.zeros(r, dtype=torch.int64, device=d)
        self.block_tables = torch.zeros(r, self.max_blocks, dtype=torch.int32, device=d)
        self.history = torch.full((r, self.history_len), -1, dtype=torch.int64, device=d)
        self.runs = torch.zeros(r, MAX_PERIOD, dtype=torch.int32, device=d)
        self.spans = torch.tensor([loop_span(p) for p in range(1, MAX_PERIOD + 1)],
                                  dtype=torch.int32, device=d)
        self.guard_ids = torch.full((r,), -1, dtype=torch.int64, device=d)
        self.loop_enabled = torch.zeros(r, dtype=torch.bool, device=d)
        self.loop_flags = torch.zeros(r, dtype=torch.bool, device=d)
        self.logits = torch.zeros(r, self.vocab_size, dtype=torch.float32, device=d)

    @property
    def _row_buffers(self) -> list[torch.Tensor]:
        return [self.tokens, self.positions, self.active, self.block_tables, self.history, self.runs,
                self.guard_ids, self.loop_enabled]

    def guard_id(self, guard: GuardConfig | None) -> int:
        """The index of a guard setting, registering it (and dropping captured graphs) when new."""
        if guard is None:
            return -1
        if guard not in self.guards:
            if guard.window > self.history_len:
                self.history_len = guard.window
                old = self.history
                self.history = torch.full((self.max_batch, guard.window), -1, dtype=torch.int64, device=self.device)
                self.history[:, -old.shape[1]:] = old
            self.guards.append(guard)
            whitelist = torch.zeros(self.vocab_size, dtype=torch.bool, device=self.device)
            whitelist[list(guard.whitelist)] = True
            self._whitelists.append(whitelist)
            self._graphs.clear()
        return self.guards.index(guard)

    def start_rows(self, rows: Sequence[int], tokens: torch.Tensor, positions: Sequence[int],
                   tables: Sequence[Sequence[int]], guard_ids: Sequence[int], loop_enabled: Sequence[bool]) -> None:
        """Put new requests into rows: their first token (on the device), next position, blocks, settings."""
        d = self.device
        idx = torch.tensor(list(rows), dtype=torch.int64, device=d)
        self.tokens[idx] = tokens
        self.positions[idx] = torch.tensor(list(positions), dtype=torch.int64, device=d)
        self.active[idx] = 1
        table = torch.zeros(len(rows), self.max_blocks, dtype=torch.int32)
        for i, blocks in enumerate(tables):
            table[i, : len(blocks)] = torch.tensor(blocks, dtype=torch.int32)
        self.block_tables[idx] = table.to(d)
        history = torch.full((len(rows), self.history_len), -1, dtype=torch.int64, device=d)
        history[:, -1] = tokens
        self.history[idx] = history
        self.runs[idx] = 0
        self.guard_ids[idx] = torch.tensor(list(guard_ids), dtype=torch.int64, device=d)
        self.loop_enabled[idx] = torch.tensor(list(loop_enabled), dtype=torch.bool, device=d)

    def move_row(self, src: int, dst: int) -> None:
        for buf in self._row_buffers:
            buf[dst] = buf[src]

    def clear_row(self, row: int) -> None:
        """Padding state: position 0 in the scratch block, no guard, no loop check."""
        for buf in (self.tokens, self.positions, self.active, self.block_tables, self.runs):
            buf[row] = 0
        self.history[row] = -1
        self.guard_ids[row] = -1
        self.loop_enabled[row] = False

    # --- prefill ----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, embeds: torch.Tensor, lengths: Sequence[int], tables: Sequence[Sequence[int]]) -> torch.Tensor:
        """Packed prompts: embeds (1, T, C) with T = sum(lengths) -> last-position logits (K, V) float32."""
        bs = self.cache.block_size
        positions = torch.cat([torch.arange(n) for n in lengths])
        blocks = torch.cat([torch.tensor(t, dtype=torch.int64)[torch.arange(n) // bs] for t, n in zip(tables, lengths)])
        ends = torch.tensor(lengths).cumsum(0)
        segments = [(int(e) - n, int(e)) for e, n in zip(ends, lengths)]
        batch = PrefillBatch(self.cache, blocks.to(self.device), (positions % bs).to(self.device), segments)
        hidden = self._hidden(embeds, positions[None].to(self.device), batch)
        last = hidden[0, (ends - 1).to(self.device)]
        return self.model.lm_head(last).float()

    # --- decode -----------------------------------------------------------------------------------------
    def bucket(self, n: int) -> int:
        return next(b for b in self.buckets if b >= n)

    def decode(self, n: int, *, greedy: bool, max_length: int | None = None) -> int:
        """One decode step over rows 0..n-1 (padded to a bucket). With `greedy`, the argmax is committed
        inside the step; otherwise the caller samples from `self.logits` and calls `commit`. Returns the
        bucket size."""
        b = self.bucket(n)
        if self.use_graphs:
            graph = self._graphs.get((b, greedy)) or self._capture(b, greedy)
            graph.replay()
        else:
            self._step(b, greedy, max_length)
        return b

    @torch.inference_mode()
    def _step(self, b: int, greedy: bool, max_length: int | None = None) -> None:
        pos = self.positions[:b]
        table = self.block_tables[:b]
        blocks = table.gather(1, (pos // self.cache.block_size)[:, None]).view(-1).long()
        kernel = "triton" if self.attention == "triton" else "torch"
        batch = DecodeBatch(self.cache, blocks, pos % self.cache.block_size, table, (pos + 1).to(torch.int32),
                            kernel=kernel, max_length=max_length)
        hidden = self._hidden(self.model.model.embed_tokens(self.tokens[:b])[:, None], pos[:, None], batch)
        logits = self.model.lm_head(hidden[:, 0]).float()
        for g, guard in enumerate(self.guards):
            banned = windowed_ngram_bans(self.history[:b, -guard.window:], guard.ngram_size, self.vocab_size,
                                         self.guard_ids[:b] == g, self._whitelists[g])
            logits = logits.masked_fill(banned, float("-inf"))
        self.logits[:b] = logits
        if greedy:
            self._commit(b, logits.argmax(dim=-1))

    def _hidden(self, x: torch.Tensor, positions: torch.Tensor, batch: DecodeBatch | PrefillBatch) -> torch.Tensor:
        """`DeepseekV2Model.decode`, layer by layer around the paged attention (compiled halves on CUDA)."""
        cfg = self.model.config.language
        cos, sin = rotary_cos_sin(positions, cfg.head_dim, cfg.rope_theta, x.dtype)
        for layer in self.model.model.layers:
            q, k, v = self._layer_inputs(layer, x, cos, sin)
            x = self._layer_outputs(layer, x, batch.attend(layer.self_attn.layer_idx, q, k, v, None, 0))
        return self.model.model.norm(x)

    def _eager_layers(self) -> None:
        logger.warning("torch.compile failed for the decode step; running it eagerly")
        self.compiled = False
        self._layer_inputs, self._layer_outputs = layer_inputs, layer_outputs

    @torch.inference_mode()
    def commit(self, n: int, tokens: torch.Tensor) -> None:
        """After a non-greedy step: the sampled tokens of rows 0..n-1 (padding rows of the bucket keep theirs)."""
        b = self.bucket(n)
        full = self.logits[:b].argmax(dim=-1)
        full[:n] = tokens
        self._commit(b, full)

    def _commit(self, b: int, tokens: torch.Tensor) -> None:
        self.tokens[:b] = tokens
        self.positions[:b] += self.active[:b]
        push_history(self.history[:b], tokens)
        self.loop_flags[:b] = update_loop_runs(self.history[:b], self.runs[:b], self.spans) & self.loop_enabled[:b]

    def _capture(self, b: int, greedy: bool) -> torch.cuda.CUDAGraph:
        """Record the step for bucket b. Warm-up runs on a side stream first (lazy init, Triton compile);
        the rows' state is saved around it, because a step mutates it."""
        saved = [buf.clone() for buf in self._row_buffers]
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            try:
                self._step(b, greedy)
            except Exception:
                if not self.compiled:
                    raise
                self._eager_layers()
                for buf, old in zip(self._row_buffers, saved):
                    buf.copy_(old)
            self._step(b, greedy)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._step(b, greedy)
        self._pool = graph.pool()
        for buf, old in zip(self._row_buffers, saved):
            buf.copy_(old)
        self._graphs[(b, greedy)] = graph
        return graph

    def capture_all(self) -> None:
        """Capture every bucket's greedy step up front, largest first (later graphs reuse its memory)."""
        if self.use_graphs:
            for b in reversed(self.buckets):
                if (b, True) not in self._graphs:
                    self._capture(b, True)

    # --- host side ------------------------------------------------------------------------------------
    def read(self, tokens: torch.Tensor, loops: torch.Tensor, owners: list) -> StepOutput:
        """Start copying a step's tokens and loop flags to the host; no wait."""
        if self.device.type != "cuda":
            return StepOutput(owners, tokens.clone(), loops.clone(), None)
        host_tokens = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
        host_loops = torch.empty(loops.shape, dtype=loops.dtype, pin_memory=True)
        host_tokens.copy_(tokens, non_blocking=True)
        host_loops.copy_(loops, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return StepOutput(owners, host_tokens, host_loops, event)

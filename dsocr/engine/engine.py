"""LLMEngine: continuous batching for the OCR model. Requests wait in a queue; each `step` admits the ones
whose KV blocks fit (vision + prefill, batched), runs one decode step for every running request, and
reads back the previous step's tokens (one step late, so the GPU never waits for the host).

Must produce what `dsocr.generation.reference.generate` produces for each request alone (greedy tokens equal,
same finish reasons; tested). Must not know about images or text: `encode_images` (from `dsocr.api.OCR`)
turns a request's `image` into its visual embeddings, and callers detokenize.

Admission reserves a request's whole cache (prompt + token limit) up front, so a running request never waits
for memory and the engine cannot run out of it, however many requests arrive: they wait in the queue.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from dsocr.engine.kv_cache import BLOCK_SIZE, BlockAllocator, PagedKVCache, PrefillBatch, blocks_for
from dsocr.engine.moe import use_grouped_experts
from dsocr.engine.runner import GuardConfig, ModelRunner, StepOutput
from dsocr.errors import GenerationError
from dsocr.generation.params import SamplingParams
from dsocr.generation.reference import FINISH_LENGTH, FINISH_STOP
from dsocr.generation.repetition import FINISH_REPETITION
from dsocr.generation.sampling import sample_next
from dsocr.model.ocr import DeepseekOCR2ForCausalLM

logger = logging.getLogger(__name__)

FINISH_ABORT = "abort"  # cancelled by the caller
FINISH_ERROR = "error"  # its own input failed (the others go on)
TYPICAL_PAGE_TOKENS = 1121  # a 6-crop page's visual tokens: sizes the memory profile
CPU_CACHE_TOKENS = 32768


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineConfig:
    max_batch: int = 128  # requests decoded together
    max_prefill_tokens: int = 8192  # prompt tokens prefilled in one step (at least one request)
    memory_fraction: float = 0.90  # CUDA: share of the GPU's memory for weights + cache + workspace
    kv_cache_tokens: int | None = None  # an explicit cache size instead (default on CPU: 32768)
    cuda_graphs: bool = True
    compile: bool = True  # CUDA: torch.compile the decode step's layers (fused elementwise work)
    attention: str = "auto"  # "triton" (CUDA), "torch" (gather + SDPA, anywhere); auto picks


@dataclass(eq=False, kw_only=True)
class EngineRequest:
    """One generation: its inputs, then its progress and results (the `GenerationResult` fields)."""

    prompt_ids: Sequence[int]
    params: SamplingParams
    image: Any = None  # given to encode_images at admission; None for text-only prompts
    on_token: Callable[[int], None] | None = None  # called on the engine's thread for each accepted token
    on_finish: Callable[[EngineRequest], None] | None = None  # called on the engine's thread at the end
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    error: BaseException | None = None
    submitted_at: float = field(default_factory=time.perf_counter)
    started_at: float = 0.0
    first_token_at: float = 0.0
    finished_at: float = 0.0
    max_new: int = 0
    blocks: list[int] = field(default_factory=list)
    cancelled: bool = False
    generator: torch.Generator | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt_ids)

    @property
    def prefill_seconds(self) -> float:
        return max(0.0, self.first_token_at - self.started_at)

    @property
    def decode_seconds(self) -> float:
        return max(0.0, self.finished_at - self.first_token_at)

    @property
    def ttft(self) -> float:
        return max(0.0, self.first_token_at - self.submitted_at)


@dataclass
class EngineStats:
    steps: int = 0
    prefills: int = 0
    generated_tokens: int = 0
    finished: int = 0
    peak_running: int = 0


class LLMEngine:
    def __init__(self, model: DeepseekOCR2ForCausalLM, *, encode_images: Callable[[list[Any]], list[torch.Tensor]],
                 eos_token_id: int, image_token_id: int, token_id: Callable[[str], int],
                 config: EngineConfig | None = None) -> None:
        self.model, self.config = model, config or EngineConfig()
        self.encode_images, self.token_id = encode_images, token_id
        self.eos_token_id, self.image_token_id = eos_token_id, image_token_id
        self.device = model.device
        self.context_limit = model.config.language.max_position_embeddings
        use_grouped_experts(model)
        num_blocks = self._num_blocks()
        self.runner = ModelRunner(model, num_blocks=num_blocks, max_batch=self.config.max_batch,
                                  cuda_graphs=self.config.cuda_graphs, attention=self._attention(),
                                  compile_layers=self.config.compile)
        self.allocator = BlockAllocator(num_blocks)
        self.stats = EngineStats()
        self.rows: list[EngineRequest] = []  # running requests; request i owns decode row i
        self._waiting: deque[EngineRequest] = deque()
        self._pending: deque[StepOutput] = deque()
        self._lock = threading.Lock()
        self.runner.guard_id(self._guard(SamplingParams()))  # the default guard, so warm-up captures it
        logger.info("engine: %d KV blocks (%d tokens), max batch %d, attention %s, CUDA graphs %s", num_blocks,
                    num_blocks * self.runner.cache.block_size, self.config.max_batch, self.runner.attention,
                    self.runner.use_graphs)

    # --- sizing -----------------------------------------------------------------------------------------
    def _attention(self) -> str:
        choice = self.config.attention
        if choice == "auto":
            if self.device.type != "cuda":
                return "torch"
            try:
                import triton  # noqa: F401
            except ImportError:
                return "torch"
            return "triton"
        if choice not in ("triton", "torch"):
            raise GenerationError(f"attention: {choice!r} is not one of auto, triton, torch")
        return choice

    def _num_blocks(self) -> int:
        lang = self.model.config.language
        per_block = PagedKVCache.bytes_per_block(lang, BLOCK_SIZE, self.model.dtype)
        most_useful = self.config.max_batch * blocks_for(self.context_limit) + 1
        if self.config.kv_cache_tokens is not None or self.device.type != "cuda":
            return min(blocks_for(self.config.kv_cache_tokens or CPU_CACHE_TOKENS) + 1, most_useful)
        _, total = torch.cuda.mem_get_info(self.device)
        workspace = self._profile_workspace()
        # Decode-step buffers: logits and their copies, (B, V) float32, a few times over.
        decode = 4 * self.config.max_batch * lang.vocab_size * 4 + (512 << 20)
        budget = self.config.memory_fraction * total - torch.cuda.memory_allocated(self.device) - workspace - decode
        blocks = int(budget // per_block)
        if blocks < 2 + blocks_for(TYPICAL_PAGE_TOKENS):
            raise GenerationError(f"no GPU memory left for the KV cache ({budget / 2**30:.1f} GiB after weights and "
                                  f"{workspace / 2**30:.1f} GiB workspace); raise memory_fraction")
        return min(blocks, most_useful)

    @torch.inference_mode()
    def _profile_workspace(self) -> int:
        """Peak memory of the largest vision + prefill step the scheduler will run, measured once."""
        cfg, dtype, device = self.model.config, self.model.dtype, self.device
        pages = max(1, self.config.max_prefill_tokens // TYPICAL_PAGE_TOKENS)
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        global_views = torch.zeros(pages, 3, cfg.base_size, cfg.base_size, dtype=dtype, device=device)
        crops = torch.zeros(6 * pages, 3, cfg.crop_size, cfg.crop_size, dtype=dtype, device=device)
        self.model.model.embed_images(global_views, crops, [6] * pages)
        del global_views, crops
        t = self.config.max_prefill_tokens
        scratch = PagedKVCache(cfg.language, 2, dtype=dtype, device=device)
        embeds = torch.zeros(1, t, cfg.language.hidden_size, dtype=dtype, device=device)
        positions = torch.arange(t, device=device)
        batch = PrefillBatch(scratch, torch.zeros(t, dtype=torch.int64, device=device), positions % BLOCK_SIZE, [(0, t)])
        self.model.lm_head(self.model.model.decode(embeds, positions[None], None, batch)[:, -1]).float()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base

    def warmup(self) -> None:
        """Capture the decode graphs now rather than at the first request of each batch size."""
        self.runner.capture_all()

    # --- requests ---------------------------------------------------------------------------------------
    def _guard(self, params: SamplingParams) -> GuardConfig | None:
        if params.ngram_size == 0:
            return None
        return GuardConfig(params.ngram_size, params.ngram_window,
                           tuple(sorted({self.token_id(t) for t in params.ngram_whitelist})))

    def add(self, request: EngineRequest) -> EngineRequest:
        """Queue a request (thread-safe). Raises GenerationError for one that can never run."""
        n = request.prompt_tokens
        if n == 0:
            raise GenerationError("empty prompt")
        if n >= self.context_limit:
            raise GenerationError(f"prompt of {n} tokens does not fit the {self.context_limit}-token context")
        if request.params.no_repeat_ngram_size:
            raise GenerationError("no_repeat_ngram_size is not supported by the fast engine (use the reference)")
        request.max_new = min(request.params.max_new_tokens, self.context_limit - n)
        if blocks_for(n + request.max_new) > self.allocator.capacity:
            raise GenerationError(f"a request of {n} + {request.max_new} tokens needs more KV cache than the "
                                  f"engine has ({self.allocator.capacity * BLOCK_SIZE} tokens)")
        if request.params.seed is not None and not request.params.is_greedy:
            request.generator = torch.Generator(device=self.device).manual_seed(request.params.seed)
        request.submitted_at = time.perf_counter()
        with self._lock:
            self._waiting.append(request)
        return request

    def abort(self, request: EngineRequest) -> None:
        """Stop a request at the next step (thread-safe); it finishes with reason "abort"."""
        request.cancelled = True

    @property
    def num_waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def has_work(self) -> bool:
        return bool(self.rows or self._pending or self.num_waiting)

    def generate(self, requests: Sequence[EngineRequest]) -> list[EngineRequest]:
        """Run the given requests (and anything else queued) to completion on this thread."""
        for r in requests:
            self.add(r)
        while not all(r.done for r in requests):
            self.step()
        return list(requests)

    # --- the loop ---------------------------------------------------------------------------------------
    def step(self) -> list[EngineRequest]:
        """One iteration: admit, decode once, read back; returns the requests that finished."""
        finished = self._admit()
        if self.rows:
            self._decode()
        while len(self._pending) > (1 if self.rows else 0):
            finished += self._process(self._pending.popleft())
        for r in self.rows:
            if r.cancelled and not r.done:
                self._finish(r, FINISH_ABORT)
                finished.append(r)
        self._compact()
        while self._pending and not self.rows:  # nothing runs any more: the last step's tokens are all stale
            finished += self._process(self._pending.popleft())
        return finished

    def fail_all(self, error: BaseException) -> list[EngineRequest]:
        """After an error of the step itself: finish every running and waiting request with it."""
        with self._lock:
            victims = self.rows + list(self._waiting)
            self._waiting.clear()
        for r in victims:
            if not r.done:
                r.error = error
                self._finish(r, FINISH_ERROR)
        self._pending.clear()
        self._compact()
        return victims

    def _take(self) -> list[EngineRequest]:
        """FIFO: the waiting requests that fit now (rows, prefill tokens, KV blocks); stops at the first
        that does not, so a big request is not overtaken forever."""
        taken, tokens, free = [], 0, self.allocator.num_free
        rows = min(self.config.max_batch, self.runner.max_batch)  # the config may be lowered while running
        with self._lock:
            while self._waiting and len(self.rows) + len(taken) < rows:
                r = self._waiting[0]
                need = blocks_for(r.prompt_tokens + r.max_new)
                if r.cancelled:
                    self._waiting.popleft()
                    taken.append(r)
                    continue
                if need > free or (taken and tokens + r.prompt_tokens > self.config.max_prefill_tokens):
                    break
                self._waiting.popleft()
                r.blocks = self.allocator.allocate(need)
                free -= need
                tokens += r.prompt_tokens
                taken.append(r)
        return taken

    def _admit(self) -> list[EngineRequest]:
        taken = self._take()
        finished = [r for r in taken if r.cancelled]
        for r in finished:
            self._finish(r, FINISH_ABORT)
        batch = [r for r in taken if not r.cancelled]
        if not batch:
            return finished
        now = time.perf_counter()
        for r in batch:
            r.started_at = now
        batch, logits = self._prefill_or_isolate(batch)
        finished += [r for r in taken if r.done and r not in finished]
        if not batch:
            return finished
        self.stats.prefills += 1
        tokens = self._sample(logits, batch)
        rows = range(len(self.rows), len(self.rows) + len(batch))
        self.runner.start_rows(rows, tokens, [r.prompt_tokens for r in batch], [r.blocks for r in batch],
                               [self.runner.guard_id(self._guard(r.params)) for r in batch],
                               [r.params.stop_on_loop for r in batch])
        self.rows.extend(batch)
        self.stats.peak_running = max(self.stats.peak_running, len(self.rows))
        self._pending.append(self.runner.read(tokens, torch.zeros_like(tokens, dtype=torch.bool), list(batch)))
        return finished

    def _prefill_or_isolate(self, batch: list[EngineRequest]) -> tuple[list[EngineRequest], torch.Tensor | None]:
        """Prefill the batch; if it fails, prefill one by one so only the guilty requests fail."""
        try:
            return batch, self._prefill(batch)
        except Exception as e:  # noqa: BLE001 - one bad input must not stop the other requests
            if len(batch) == 1:
                self._fail(batch[0], e)
                return [], None
        good, parts = [], []
        for r in batch:
            try:
                parts.append(self._prefill([r]))
                good.append(r)
            except Exception as e:  # noqa: BLE001
                self._fail(r, e)
        return good, (torch.cat(parts) if parts else None)

    def _fail(self, r: EngineRequest, error: BaseException) -> None:
        logger.warning("request failed in prefill: %s: %s", type(error).__name__, error)
        r.error = error
        self._finish(r, FINISH_ERROR)

    @torch.inference_mode()
    def _prefill(self, batch: list[EngineRequest]) -> torch.Tensor:
        images = [r.image for r in batch if r.image is not None]
        embeds = self.encode_images(images) if images else []
        ids = torch.tensor([t for r in batch for t in r.prompt_ids], device=self.device)[None]
        inputs = self.model.model.embed_inputs(ids, ids == self.image_token_id, embeds)
        return self.runner.prefill(inputs, [r.prompt_tokens for r in batch], [r.blocks for r in batch])

    def _sample(self, logits: torch.Tensor, batch: list[EngineRequest]) -> torch.Tensor:
        """(K, V) logits -> (K,) tokens on the device: argmax, or each sampling request's own draw."""
        tokens = logits.argmax(dim=-1)
        for i, r in enumerate(batch):
            if not r.params.is_greedy:
                tokens[i] = sample_next(logits[i:i + 1], r.params, r.generator)[0]
        return tokens

    def _decode(self) -> None:
        n = len(self.rows)
        greedy = all(r.params.is_greedy for r in self.rows)
        bound = None  # the gathered attention reads only up to a host bound; graphs need no bound
        if not self.runner.use_graphs:
            bound = max(r.prompt_tokens + len(r.token_ids) for r in self.rows) + 3  # host lags one step
        bucket = self.runner.decode(n, greedy=greedy, max_length=bound)
        if not greedy:
            self.runner.commit(n, self._sample(self.runner.logits[:n], self.rows))
        owners = list(self.rows) + [None] * (bucket - n)
        self._pending.append(self.runner.read(self.runner.tokens[:bucket], self.runner.loop_flags[:bucket], owners))
        self.stats.steps += 1

    def _process(self, out: StepOutput) -> list[EngineRequest]:
        out.wait()
        finished = []
        now = time.perf_counter()
        for r, token, looping in zip(out.owners, out.tokens.tolist(), out.loops.tolist()):
            if r is None or r.done:
                continue
            if not r.first_token_at:
                r.first_token_at = now
            if token == self.eos_token_id and not r.params.ignore_eos:
                self._finish(r, FINISH_STOP)
                finished.append(r)
                continue
            r.token_ids.append(token)
            self.stats.generated_tokens += 1
            if r.on_token is not None and not _notify(r.on_token, token):
                r.on_token = None  # the request goes on without its consumer
            if looping:
                self._finish(r, FINISH_REPETITION)
            elif len(r.token_ids) >= r.max_new:
                self._finish(r, FINISH_LENGTH)
            if r.done:
                finished.append(r)
        return finished

    def _finish(self, r: EngineRequest, reason: str) -> None:
        r.finish_reason = reason
        r.finished_at = time.perf_counter()
        if not r.first_token_at:
            r.first_token_at = r.finished_at
        self.allocator.free(r.blocks)  # the in-flight step may still write there: stream order keeps it safe
        r.blocks = []
        self.stats.finished += 1
        if r.on_finish is not None:
            _notify(r.on_finish, r)

    def _compact(self) -> None:
        """Fill the rows of finished requests with the last running ones, so rows 0..n-1 stay dense."""
        i = 0
        while i < len(self.rows):
            if self.rows[i].done:
                last = len(self.rows) - 1
                if last != i:
                    self.runner.move_row(last, i)
                    self.rows[i] = self.rows[last]
                self.runner.clear_row(last)
                self.rows.pop()
            else:
                i += 1


def _notify(callback: Callable[[Any], None], value: Any) -> bool:
    """Call a request's callback; a failing consumer is logged and must not stop the batch."""
    try:
        callback(value)
    except Exception:
        logger.exception("request callback %r failed", callback)
        return False
    return True

"""The serving engine: one model, one scheduler thread, requests from many clients batched together.

Must not know about HTTP or jobs. Requests wait in a bounded queue (`QueueFull` when it is full: the server
answers 429). Two modes, chosen by the OCR object:
- continuous (the fast engine, `OCR.engine`, default on CUDA): every request joins the running batch as soon
  as its KV cache fits and leaves it when done; the thread only steps `dsocr.engine.LLMEngine`;
- batches (the reference loop, CPU; and any model that reads lines): the scheduler takes up to `max_batch`
  queued requests that share sampling parameters and runs them as one batch through `OCR.run`.
Either way text pieces stream to each request's callback as they are generated, and cancelling a request's
future (a client gone, a timeout) stops its generation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dsocr.generation.params import SamplingParams

logger = logging.getLogger(__name__)


class QueueFull(Exception):
    """The engine's queue is at its limit; try again later."""


@dataclass(eq=False)
class Request:
    prepared: Any  # dsocr.api.PreparedImage
    sampling: SamplingParams
    on_text: Callable[[str], None] | None = None
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.monotonic)


@dataclass
class EngineStats:
    requests: int = 0
    batches: int = 0
    generated_tokens: int = 0
    busy_seconds: float = 0.0
    failures: int = 0


class Engine:
    """Thread-safe front of a loaded `dsocr.api.OCR`."""

    def __init__(self, ocr: Any, *, max_batch: int = 8, max_queue: int = 64) -> None:
        self.ocr = ocr
        self.max_batch, self.max_queue = max_batch, max_queue
        self.stats = EngineStats()
        self._queue: deque[Request] = deque()
        self._cond = threading.Condition()
        self._stopped = False
        # dsocr.engine.LLMEngine, or None: batches of OCR.run. A model that reads lines runs batches too: a
        # page is several line views, its answer assembled at the end (OCR.run still uses the fast engine).
        self.llm = None if getattr(ocr, "reads_lines", False) else getattr(ocr, "engine", None)
        # Results are parsed (detokenize, grounding) off the engine thread, which must keep the GPU fed.
        self._finisher = ThreadPoolExecutor(2, thread_name_prefix="dsocr-finish") if self.llm else None
        loop = self._loop_continuous if self.llm is not None else self._loop
        self._thread = threading.Thread(target=loop, name="dsocr-engine", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self.ocr.name

    @property
    def queue_depth(self) -> int:
        if self.llm is not None:
            return self.llm.num_waiting
        with self._cond:
            return len(self._queue)

    def submit(self, prepared: Any, sampling: SamplingParams, *, on_text: Callable[[str], None] | None = None,
               reserve: int = 0) -> Future:
        """Queue one prepared image; the future gets its `OCRResult`. `reserve` keeps that many queue slots
        free for others (document jobs use it, so interactive requests are not locked out)."""
        request = Request(prepared, sampling, on_text)
        with self._cond:
            if self._stopped:
                raise RuntimeError("the engine is stopped")
            if self.queue_depth >= self.max_queue - reserve:
                raise QueueFull(f"the queue is full ({self.queue_depth} requests waiting)")
            if self.llm is not None:
                self._add_continuous(request)  # GenerationError for what the engine cannot run
            else:
                self._queue.append(request)
            self._cond.notify()
        return request.future

    def _add_continuous(self, request: Request) -> None:
        """Hand the request to the fast engine. Its future stays pending until the result is set, so that
        cancelling it (a client gone, a timeout) works while it runs: the engine then aborts it."""
        future = request.future

        def on_finish(done: Any) -> None:
            if future.cancelled():
                return
            self._finisher.submit(self._resolve, request, done, time.perf_counter())

        engine_request = self.ocr.engine_request(request.prepared, request.sampling, request.on_text, on_finish)
        self.llm.add(engine_request)  # raises GenerationError for a request that can never run
        future.add_done_callback(lambda f: self.llm.abort(engine_request) if f.cancelled() else None)

    def _resolve(self, request: Request, done: Any, finished_at: float) -> None:
        future = request.future
        try:
            if done.error is not None:
                self.stats.failures += 1
                raise done.error
            result = self.ocr.result(request.prepared, done)
        except Exception as e:  # noqa: BLE001 - the request's own failure goes to its caller
            if not future.cancelled():
                future.set_exception(e)
            return
        self.stats.requests += 1
        self.stats.generated_tokens += len(result.token_ids)
        if future.set_running_or_notify_cancel():
            future.set_result(result)

    def run(self, prepared: Any, sampling: SamplingParams, **kwargs: Any) -> Any:
        """Submit and wait (for callers on their own threads)."""
        return self.submit(prepared, sampling, **kwargs).result()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout=60)
        with self._cond:
            while self._queue:
                self._queue.popleft().future.set_exception(RuntimeError("the server is shutting down"))
        if self.llm is not None:
            self.llm.fail_all(RuntimeError("the server is shutting down"))
            self._finisher.shutdown(wait=True)

    def _loop_continuous(self) -> None:
        llm = self.llm
        while True:
            with self._cond:
                while not self._stopped and not llm.has_work():
                    self._cond.wait(timeout=1.0)
                if self._stopped:
                    return
            start = time.perf_counter()
            try:
                llm.step()
            except Exception as e:
                logger.exception("engine step failed")
                llm.fail_all(e)
            self.stats.busy_seconds += time.perf_counter() - start
            self.stats.batches += 1

    def _take_batch(self) -> list[Request] | None:
        with self._cond:
            while not self._queue and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
            first = self._queue.popleft()
            batch = [first]
            for request in list(self._queue):  # same sampling parameters: one generate() call
                if len(batch) >= self.max_batch:
                    break
                if request.sampling == first.sampling:
                    self._queue.remove(request)
                    batch.append(request)
            return batch

    def _loop(self) -> None:
        while (batch := self._take_batch()) is not None:
            batch = [r for r in batch if r.future.set_running_or_notify_cancel()]
            if batch:
                self._run(batch)

    def _run(self, batch: list[Request]) -> None:
        start = time.perf_counter()
        callbacks = [r.on_text for r in batch]

        def on_text(i: int, piece: str) -> None:
            if callbacks[i] is not None:
                try:
                    callbacks[i](piece)
                except Exception:  # noqa: BLE001 - a client that went away must not stop the batch
                    callbacks[i] = None

        try:
            results = self.ocr.run([r.prepared for r in batch], sampling=batch[0].sampling,
                                   on_text=on_text if any(callbacks) else None)
        except Exception as e:
            logger.exception("batch of %d failed", len(batch))
            self.stats.failures += len(batch)
            for request in batch:
                request.future.set_exception(e)
            return
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.generated_tokens += sum(len(r.token_ids) for r in results)
        self.stats.busy_seconds += time.perf_counter() - start
        for request, result in zip(batch, results):
            request.future.set_result(result)

"""The serving engine: one model, one scheduler thread, requests from many clients batched together.

Must not know about HTTP or jobs. Requests wait in a bounded queue (`QueueFull` when it is full: the server
answers 429); the scheduler takes up to `max_batch` of them that share sampling parameters and runs them as
one batch through `OCR.run`, streaming text pieces to each request's callback as they are generated.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
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
        self._thread = threading.Thread(target=self._loop, name="dsocr-engine", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self.ocr.name

    @property
    def queue_depth(self) -> int:
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
            if len(self._queue) >= self.max_queue - reserve:
                raise QueueFull(f"the queue is full ({len(self._queue)} requests waiting)")
            self._queue.append(request)
            self._cond.notify()
        return request.future

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

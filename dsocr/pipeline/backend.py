"""Backends: what turns a page image into raw model output for the pipeline.

Must not know about documents, files or retries. A backend has two halves: `prepare` (CPU work on one
image, safe to call from worker threads while the model runs) and `generate` (one batch on the model).

- `ModelBackend`: our model (`dsocr.api.OCR`), local CPU or CUDA.
- `RemoteBackend`: an OpenAI-compatible server (`dsocr convert --endpoint URL`).
- `StubBackend`: no model; answers instantly with a fixed grounded output (or a function's). It exists to
  measure the pipeline's own overhead (benchmarks/pipeline.py) and to drive the pipeline through paths a
  real model takes only by chance (loops, truncation) in tests.
"""

from __future__ import annotations

import base64
import io
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from PIL import Image

from dsocr.errors import GenerationError
from dsocr.generation.params import SamplingParams
from dsocr.processing.image import (
    ProcessingConfig,
    count_image_tokens,
    crop_grid,
    preprocess_image,
    processing_config_for_mode,
)
from dsocr.processing.prompts import resolve_prompt

FINISH_STOP, FINISH_LENGTH = "stop", "length"


@dataclass(frozen=True, slots=True, kw_only=True)
class View:
    """How a page becomes visual input: a resolution mode and crop limits (None = the model's defaults)."""

    mode: str = "gundam"
    min_crops: int | None = None
    max_crops: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PageOutput:
    text: str  # raw output, grounding tags kept, EOS removed
    finish_reason: str  # "stop" | "length"
    token_ids: tuple[int, ...] = ()  # remote backends: stand-ins (one per word), see RemoteBackend
    prompt_tokens: int = 0
    image_tokens: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    completion_tokens: int | None = None  # when token_ids are stand-ins, the server's own count

    @property
    def generated_tokens(self) -> int:
        return len(self.token_ids) if self.completion_tokens is None else self.completion_tokens


class Backend(Protocol):
    name: str

    def processing_config(self, view: View) -> ProcessingConfig: ...

    def prepare(self, image: Image.Image, prompt: str | None, view: View) -> Any: ...

    def generate(self, prepared: Sequence[Any], sampling: SamplingParams) -> list[PageOutput]: ...


def view_config(view: View, *, base_size: int = 1024, crop_size: int = 768) -> ProcessingConfig:
    """The processing config of a view for a model with these view sizes (None crop limits = defaults)."""
    limits = {k: v for k, v in (("min_crops", view.min_crops), ("max_crops", view.max_crops)) if v is not None}
    return processing_config_for_mode(view.mode, base_size=base_size, crop_size=crop_size, **limits)


def page_output(result: Any) -> PageOutput:
    """A `dsocr.api.OCRResult` as the pipeline's PageOutput."""
    return PageOutput(text=result.text, finish_reason=result.finish_reason, token_ids=result.token_ids,
                      prompt_tokens=result.prompt_tokens, image_tokens=result.num_image_tokens,
                      timings=result.timings)


def word_ids(text: str) -> tuple[int, ...]:
    """Stand-in token ids when a backend has none: one per word, the same word the same id, so counts and
    the loop detector behave as on a model's tokens."""
    return tuple(zlib.crc32(word.encode("utf-8")) for word in text.split())


def num_crops(backend: Backend, size: tuple[int, int], view: View) -> int:
    """How many crop tiles a page of `size` gets under `view` (0 = global view only)."""
    grid = crop_grid(*size, backend.processing_config(view))
    return grid[0] * grid[1] if grid else 0


class ModelBackend:
    """Our model, through `dsocr.api.OCR` (one `generate` call at a time)."""

    def __init__(self, ocr: Any) -> None:  # dsocr.api.OCR; not imported here to keep torch out of imports
        self.ocr = ocr
        self.name = ocr.name

    def processing_config(self, view: View) -> ProcessingConfig:
        return self.ocr.processing_config(view.mode, min_crops=view.min_crops, max_crops=view.max_crops)

    def prepare(self, image: Image.Image, prompt: str | None, view: View) -> Any:
        return self.ocr.prepare(image, prompt, mode=view.mode, min_crops=view.min_crops,
                                max_crops=view.max_crops)

    def generate(self, prepared: Sequence[Any], sampling: SamplingParams) -> list[PageOutput]:
        return [page_output(r) for r in self.ocr.run(prepared, sampling=sampling)]


STUB_OUTPUT = (
    "<|ref|>title<|/ref|><|det|>[[80, 40, 920, 90]]<|/det|>\n# A stub page\n\n"
    "<|ref|>text<|/ref|><|det|>[[80, 120, 920, 400]]<|/det|>\nThis text comes from the stub backend, "
    "which answers without a model.\n\n"
    "<|ref|>image<|/ref|><|det|>[[100, 450, 600, 800]]<|/det|>\n\n"
    "<|ref|>image_caption<|/ref|><|det|>[[100, 810, 600, 850]]<|/det|>\nFigure 1: a box.\n\n"
    "<|ref|>equation<|/ref|><|det|>[[100, 870, 900, 920]]<|/det|>\n\\[ E = mc^2 \\]"
)


@dataclass(slots=True, kw_only=True)
class StubRequest:
    image_size: tuple[int, int]
    prompt: str
    view: View
    num_crops: int
    image_tokens: int


class StubBackend:
    """Answers every page with `respond(request, sampling)` (default: STUB_OUTPUT, finished) without a model.

    `prepare` still runs the real preprocessing unless `preprocess=False`, so the pipeline's measured
    overhead includes it: the views cut on the CPU with Pillow (a CPU backend), or with `defer_views` only
    the page's pixels, the views being left to the device (a CUDA backend).
    """

    name = "stub"

    def __init__(self, respond: Callable[[StubRequest, SamplingParams], tuple[str, str]] | None = None, *,
                 preprocess: bool = True, defer_views: bool = False, base_size: int = 1024,
                 crop_size: int = 768) -> None:
        self.respond = respond or (lambda _request, _sampling: (STUB_OUTPUT, FINISH_STOP))
        self.preprocess, self.defer_views = preprocess, defer_views
        self.base_size, self.crop_size = base_size, crop_size
        self.calls: list[list[StubRequest]] = []  # every generate() batch, for inspection

    def processing_config(self, view: View) -> ProcessingConfig:
        return view_config(view, base_size=self.base_size, crop_size=self.crop_size)

    def prepare(self, image: Image.Image, prompt: str | None, view: View) -> StubRequest:
        config = self.processing_config(view)
        if self.preprocess:
            preprocess_image(image, config, defer=self.defer_views)
        return StubRequest(image_size=image.size, prompt=resolve_prompt(prompt), view=view,
                           num_crops=num_crops(self, image.size, view),
                           image_tokens=count_image_tokens(*image.size, config))

    def generate(self, prepared: Sequence[StubRequest], sampling: SamplingParams) -> list[PageOutput]:
        self.calls.append(list(prepared))
        outputs = []
        for request in prepared:
            start = time.perf_counter()
            text, finish = self.respond(request, sampling)
            tokens = word_ids(text)
            outputs.append(PageOutput(text=text, finish_reason=finish, token_ids=tokens, prompt_tokens=10,
                                      image_tokens=request.image_tokens,
                                      timings={"decode": time.perf_counter() - start}))
        return outputs


class RemoteBackend:
    """Pages sent to an OpenAI-compatible server (`dsocr serve`, or `vllm serve deepseek-ai/DeepSeek-OCR-2`)
    as chat completions with the page as a PNG data URI, `batch_size` requests in flight at once.

    The server does the preprocessing, so a `View` cannot change it (the fewer-crops retry then only tightens
    the repetition guard). Servers return text, not token ids: one stand-in id per word lets the loop
    detector work on words.
    """

    def __init__(self, endpoint: str, *, model: str | None = None, api_key: str | None = None,
                 timeout: float = 3600.0, concurrency: int = 4) -> None:
        import httpx

        self.endpoint = endpoint.rstrip("/")
        if not self.endpoint.endswith("/v1"):
            self.endpoint += "/v1"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=timeout)
        self.concurrency = concurrency
        self.name = model or self._first_model()

    def _first_model(self) -> str:
        response = self._request("GET", "/models")
        models = response.get("data") or []
        if not models:
            raise GenerationError(f"{self.endpoint}: the server lists no models")
        return models[0]["id"]

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx

        try:
            response = self.client.request(method, self.endpoint + path, json=body)
        except httpx.HTTPError as e:
            raise GenerationError(f"{self.endpoint}: {e}") from None
        if response.status_code != 200:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise GenerationError(f"{self.endpoint}: HTTP {response.status_code}: {message}")
        return response.json()

    def processing_config(self, view: View) -> ProcessingConfig:
        return view_config(view)

    def prepare(self, image: Image.Image, prompt: str | None, view: View) -> tuple[str, str]:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=1)  # lossless: the server sees our pixels
        return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(), resolve_prompt(prompt)

    def generate(self, prepared: Sequence[tuple[str, str]], sampling: SamplingParams) -> list[PageOutput]:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda item: self._one(*item, sampling), prepared))

    def _one(self, image_uri: str, prompt: str, sampling: SamplingParams) -> PageOutput:
        start = time.perf_counter()
        text_prompt = prompt.replace("<image>", "", 1).lstrip("\n") if prompt.startswith("<image>") else prompt
        body = {"model": self.name, "max_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
                "top_p": sampling.top_p, "skip_special_tokens": False,
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_uri}},
                                                          {"type": "text", "text": text_prompt}]}],
                "vllm_xargs": {"ngram_size": sampling.ngram_size, "window_size": sampling.ngram_window}}
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        reply = self._request("POST", "/chat/completions", body)
        choice = reply["choices"][0]
        text = choice["message"]["content"] or ""
        usage = reply.get("usage") or {}
        return PageOutput(text=text, finish_reason=FINISH_STOP if choice["finish_reason"] == "stop" else FINISH_LENGTH,
                          token_ids=word_ids(text),
                          prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens"),
                          timings={"generate": time.perf_counter() - start})

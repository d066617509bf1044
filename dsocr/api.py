"""The Python API: load a model once, then `ocr(image, prompt=...)` many times, returning result objects.

Must not print, exit or parse command lines; it raises DsocrError subclasses and returns values.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from dsocr.engine.cpu import use_cpu_decoding
from dsocr.engine.engine import EngineConfig, EngineRequest, LLMEngine
from dsocr.engine.sam_windows import use_blank_windows
from dsocr.errors import ConfigError
from dsocr.generation.params import SamplingParams
from dsocr.generation.reference import FINISH_STOP, GenerationRequest, generate
from dsocr.generation.repetition import FINISH_REPETITION
from dsocr.hub import resolve_model_dir
from dsocr.model.ocr import DeepseekOCR2ForCausalLM
from dsocr.model.weights import load_model
from dsocr.output.grounding import Block, parse_grounding
from dsocr.pipeline import line_reader
from dsocr.processing.image import (
    DeferredImageInputs,
    ImageInputs,
    ProcessingConfig,
    count_image_tokens,
    load_image,
    normalize,
    preprocess_image,
    processing_config_for_mode,
)
from dsocr.processing.prompts import resolve_prompt
from dsocr.processing.tokenizer import StreamDecoder, Tokenizer

logger = logging.getLogger(__name__)

ImageSource = str | os.PathLike | bytes | Image.Image
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
EMBED_IMAGES = 16  # images through the vision tower at once (see OCR._embed)
CPU_EMBED_IMAGES = 4  # fewer at once on a CPU: 0.31 s a view at 4, 0.33-0.36 at 16 (embedded model, 2 AVX2 cores)


@dataclass(frozen=True, slots=True, kw_only=True)
class OCRResult:
    text: str  # raw model output, special tokens kept, EOS removed (lines models: assembled from the views)
    markdown: str
    blocks: tuple[Block, ...]
    token_ids: tuple[int, ...]
    finish_reason: str  # "stop" (EOS), "length" (token limit) or "repetition" (loop stopped early): unfinished
    image_size: tuple[int, int]
    num_image_tokens: int
    prompt_tokens: int
    timings: dict[str, float] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def is_finished(self) -> bool:
        return self.finish_reason == FINISH_STOP

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text, "markdown": self.markdown, "blocks": [b.to_dict() for b in self.blocks],
            "token_ids": list(self.token_ids), "finish_reason": self.finish_reason,
            "finished": self.is_finished, "image_size": list(self.image_size),
            "num_image_tokens": self.num_image_tokens, "prompt_tokens": self.prompt_tokens,
            "timings": self.timings, "warnings": list(self.warnings),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedImage:
    """One image after preprocessing, with its prompt tokenized: what `OCR.run` consumes."""

    inputs: ImageInputs | DeferredImageInputs
    prompt_ids: list[int]
    seconds: float = 0.0  # time spent preparing

    @property
    def image_size(self) -> tuple[int, int]:
        return self.inputs.original_size


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedLines:
    """One page for a model that reads lines: its line views, each prepared like an image in "base" mode, and
    the layout that maps their rows back to the page's lines and regions (`dsocr.pipeline.line_reader`)."""

    page: line_reader.LinePage
    views: tuple[PreparedImage, ...]
    answer: str  # line_reader.GROUNDING or PLAIN
    seconds: float = 0.0  # layout, cutting and preprocessing

    @property
    def image_size(self) -> tuple[int, int]:
        return self.page.image_size


Prepared = PreparedImage | PreparedLines


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: CUDA was requested but no CUDA device is available")
    return device


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"dtype: {dtype!r} is not one of auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def native_bf16(device: torch.device) -> bool:
    """A CPU that computes bfloat16 natively (AVX512-BF16 or AMX). There, `dtype="auto"` runs the vision tower of
    a model that reads lines (trained in bfloat16) in bfloat16: ~30% less time a page at the same CER
    (docs/training.md, run 6); elsewhere bfloat16 is emulated, slower than float32."""
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, so looked up with care
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


ENGINES = ("auto", "fast", "reference")


def resolve_engine(engine: str, device: torch.device) -> str:
    """"fast" or "reference": auto is fast on CUDA, the reference loop on CPU (where the engine gains nothing)."""
    if engine not in ENGINES:
        raise ConfigError(f"engine: {engine!r} is not one of {', '.join(ENGINES)}")
    if engine == "auto":
        return "fast" if device.type == "cuda" else "reference"
    return engine


class OCR:
    """A loaded model with its tokenizer. Thread-compatible, not thread-safe: one call at a time.

    `engine`: "fast" runs generation on `dsocr.engine.LLMEngine` (continuous batching, paged cache, CUDA
    graphs on CUDA), "reference" on the plain loop of `dsocr.generation.reference`; "auto" picks fast on CUDA
    and the reference loop on CPU (where the engine has nothing to gain), there with the MoE layers and the LM head
    switched to `dsocr.engine.cpu`'s small-batch forms by `from_pretrained` (same results up to float32
    rounding; `engine="reference"` keeps the reference modules)."""

    def __init__(self, model: DeepseekOCR2ForCausalLM, tokenizer: Tokenizer, *, name: str = "",
                 engine: str = "auto", engine_config: EngineConfig | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.engine_mode = resolve_engine(engine, model.device)
        self.engine_config = engine_config
        self._engine: LLMEngine | None = None

    @property
    def engine(self) -> LLMEngine | None:
        """The fast engine (built at first use), or None when this OCR runs the reference loop."""
        if self.engine_mode != "fast":
            return None
        if self._engine is None:
            self._engine = LLMEngine(
                self.model, encode_images=self._embed, eos_token_id=self.tokenizer.eos_id,
                image_token_id=self.tokenizer.image_id, token_id=self.tokenizer.token_id, config=self.engine_config)
        return self._engine

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike, *, device: str | torch.device = "auto",
                        dtype: str | torch.dtype = "auto", engine: str = "auto",
                        engine_config: EngineConfig | None = None) -> OCR:
        model_dir = resolve_model_dir(model)
        torch_device = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, torch_device)
        start = time.perf_counter()
        network = load_model(model_dir, device=torch_device, dtype=torch_dtype)
        vision = torch_dtype
        if dtype == "auto" and network.config.reading == "lines" and native_bf16(torch_device):
            vision = torch.bfloat16
            network.model.vision_to(vision)
        if engine == "auto" and torch_device.type == "cpu":  # "reference" keeps the reference modules as they are
            use_cpu_decoding(network)
            use_blank_windows(network)  # SAM's leading windowed blocks skip the views' flat windows
        tokenizer = Tokenizer.from_file(Path(model_dir) / "tokenizer.json")
        logger.info("loaded %s on %s (%s, vision %s) in %.1fs", model_dir, torch_device, torch_dtype, vision,
                    time.perf_counter() - start)
        return cls(network, tokenizer, name=str(model), engine=engine, engine_config=engine_config)

    def processing_config(self, mode: str = "gundam", *, min_crops: int | None = None,
                          max_crops: int | None = None) -> ProcessingConfig:
        """How `prepare` turns an image into views in `mode`; a model that reads lines has base views only."""
        cfg = self.model.config
        kwargs = {k: v for k, v in (("min_crops", min_crops), ("max_crops", max_crops)) if v is not None}
        mode = "base" if self.reads_lines else mode
        return processing_config_for_mode(mode, base_size=cfg.base_size, crop_size=cfg.crop_size, **kwargs)

    @property
    def reads_lines(self) -> bool:
        """True for a model that reads text lines, not pages (`reading: "lines"`, the embedded model)."""
        return self.model.config.reading == "lines"

    def check_prompt(self, prompt: str | None, *, locate_text: str | None = None) -> None:
        """Raise ConfigError (or GenerationError) now for a prompt this model cannot answer."""
        if self.reads_lines:
            line_reader.answer_format(prompt, locate_text=locate_text)
        else:
            resolve_prompt(prompt, locate_text=locate_text)

    def ocr(self, image: ImageSource, prompt: str | None = None, *, mode: str = "gundam",
            min_crops: int | None = None, max_crops: int | None = None, sampling: SamplingParams | None = None,
            locate_text: str | None = None, on_text: Callable[[str], None] | None = None) -> OCRResult:
        """OCR one image. `prompt` is a preset name (markdown, ocr, free, figure, describe, locate with
        `locate_text`) or custom text."""
        stream = (lambda _i, text: on_text(text)) if on_text else None
        return self.ocr_batch([image], prompt, mode=mode, min_crops=min_crops, max_crops=max_crops,
                              sampling=sampling, locate_text=locate_text, on_text=stream)[0]

    def ocr_batch(self, images: Sequence[ImageSource], prompt: str | None = None, *, mode: str = "gundam",
                  min_crops: int | None = None, max_crops: int | None = None,
                  sampling: SamplingParams | None = None, locate_text: str | None = None,
                  on_text: Callable[[int, str], None] | None = None) -> list[OCRResult]:
        """OCR several images in one batch (same prompt); results in input order."""
        prepared = [self.prepare(image, prompt, mode=mode, min_crops=min_crops, max_crops=max_crops,
                                 locate_text=locate_text) for image in images]
        return self.run(prepared, sampling=sampling, on_text=on_text)

    def prepare(self, image: ImageSource, prompt: str | None = None, *, mode: str = "gundam",
                min_crops: int | None = None, max_crops: int | None = None,
                locate_text: str | None = None, defer_views: bool | None = None) -> Prepared:
        """Decode and preprocess one image and tokenize its prompt: the CPU half of `ocr`, safe to run in
        worker threads while `run` uses the model. `defer_views` (default: when the model is on CUDA) leaves
        the resizing to the model's device, bit-identical to Pillow's. A model that reads lines gets the
        page's text lines in line views instead (`PreparedLines`); mode, crops and `defer_views` do not
        apply."""
        if self.reads_lines:
            return self._prepare_lines(image, prompt, locate_text)
        start = time.perf_counter()
        config = self.processing_config(mode, min_crops=min_crops, max_crops=max_crops)
        text = resolve_prompt(prompt, locate_text=locate_text)
        defer = self.model.device.type == "cuda" if defer_views is None else defer_views
        inputs = preprocess_image(load_image(image, max_pixels=config.max_image_pixels), config, defer=defer)
        prompt_ids = self.tokenizer.encode_prompt(text, [inputs.num_image_tokens])
        return PreparedImage(inputs=inputs, prompt_ids=prompt_ids, seconds=time.perf_counter() - start)

    def _prepare_lines(self, image: ImageSource, prompt: str | None,
                       locate_text: str | None) -> PreparedLines:
        """Layout, line views, each view preprocessed in "base" mode with the `free` prompt (what the rows are
        read with, whatever the page's answer format)."""
        start = time.perf_counter()
        answer = line_reader.answer_format(prompt, locate_text=locate_text)
        config = self.processing_config("base")
        page = line_reader.line_views(load_image(image, max_pixels=config.max_image_pixels), config.base_size)
        inputs = [preprocess_image(view, config) for view in page.views]
        num_image_tokens = count_image_tokens(config.base_size, config.base_size, config)
        prompt_ids = self.tokenizer.encode_prompt(resolve_prompt("free"), [num_image_tokens])
        views = tuple(PreparedImage(inputs=x, prompt_ids=prompt_ids) for x in inputs)
        return PreparedLines(page=page, views=views, answer=answer, seconds=time.perf_counter() - start)

    def run(self, prepared: Sequence[Prepared], *, sampling: SamplingParams | None = None,
            on_text: Callable[[int, str], None] | None = None) -> list[OCRResult]:
        """Encode the images and generate for all of them as one batch; results in input order. Pages prepared
        for a model that reads lines stream their whole answer in one piece once it is assembled."""
        sampling = sampling or SamplingParams()
        kinds = {isinstance(p, PreparedLines) for p in prepared}
        if kinds == {True}:
            return self._run_lines(prepared, sampling, on_text)
        if len(kinds) > 1:
            raise ConfigError("a batch mixes pages prepared as line views with pages prepared as images")
        generated = self._generate(prepared, sampling, on_text)
        return [self._result(p.inputs, g, {"preprocess": p.seconds, **timings})
                for p, (g, timings) in zip(prepared, generated)]

    def _generate(self, prepared: Sequence[PreparedImage], sampling: SamplingParams,
                  on_text: Callable[[int, str], None] | None) -> list[tuple[Any, dict[str, float]]]:
        """(generated, timings) of each image, as one batch: engine requests on the fast engine, the reference
        loop's results otherwise (both have token_ids, finish_reason, prompt_tokens and the seconds)."""
        if not prepared:
            return []
        if self.engine is not None and not sampling.no_repeat_ngram_size:
            requests = [self.engine_request(p, sampling, (lambda piece, i=i: on_text(i, piece)) if on_text else None)
                        for i, p in enumerate(prepared)]
            self.engine.generate(requests)
            for r in requests:
                if r.error is not None:
                    raise r.error
            return [(r, {"ttft": r.ttft}) for r in requests]
        t1 = time.perf_counter()
        embeds = self._embed([p.inputs for p in prepared])
        t2 = time.perf_counter()
        requests = [GenerationRequest(prompt_ids=p.prompt_ids, image_embeds=[e]) for p, e in zip(prepared, embeds)]
        decoders = [StreamDecoder(self.tokenizer) for _ in prepared]
        callback = None
        if on_text:
            def callback(i: int, token: int) -> None:
                piece = decoders[i].push(token)
                if piece:
                    on_text(i, piece)
        generated = generate(self.model, requests, sampling, image_token_id=self.tokenizer.image_id,
                             eos_token_id=self.tokenizer.eos_id, on_token=callback,
                             whitelist_ids=[self.tokenizer.token_id(t) for t in sampling.ngram_whitelist])
        if on_text:
            for i, d in enumerate(decoders):
                tail = d.flush()
                if tail:
                    on_text(i, tail)
        vision = (t2 - t1) / len(prepared)
        return [(g, {"vision": vision}) for g in generated]

    def _run_lines(self, prepared: Sequence[PreparedLines], sampling: SamplingParams,
                   on_text: Callable[[int, str], None] | None) -> list[OCRResult]:
        """Every view of every page as one batch, misread views again (`line_reader.reread`), then each page's
        answer assembled from its views' rows."""
        views = [v for p in prepared for v in p.views]
        owners = [i for i, p in enumerate(prepared) for _ in p.views]  # each view's page
        firsts = list(accumulate((len(p.views) for p in prepared), initial=0))  # each page's first view
        view_sampling = line_reader.view_sampling(sampling, self.model.config.base_size)
        generated = self._generate(views, view_sampling, None)
        # each page's views read again: (its view, (generated, timings)) of each smaller view
        again: list[list[tuple[int, tuple[Any, dict[str, float]]]]] = [[] for _ in prepared]

        def read(jobs: Sequence[tuple[int, Image.Image]]) -> list[str]:
            config = self.processing_config("base")
            smaller = [PreparedImage(inputs=preprocess_image(image, config), prompt_ids=views[v].prompt_ids)
                       for v, image in jobs]
            out = self._generate(smaller, view_sampling, None)
            for (v, _), g in zip(jobs, out):
                again[owners[v]].append((v - firsts[owners[v]], g))
            return [self.tokenizer.decode(g.token_ids) for g, _ in out]

        page_views = [(p.page, v) for p in prepared for v in range(len(p.views))]
        texts = line_reader.reread(
            [page.views[v] for page, v in page_views], [page.rows(v) for page, v in page_views],
            [self.tokenizer.decode(g.token_ids) for g, _ in generated], read, [page.paper for page, _ in page_views])
        results = []
        for i, page in enumerate(prepared):
            start, end = firsts[i], firsts[i + 1]
            result = self._lines_result(page, texts[start:end], generated[start:end], again[i])
            if on_text and result.text:
                on_text(i, result.text)
            results.append(result)
        return results

    def _lines_result(self, prepared: PreparedLines, view_texts: Sequence[str],
                      generated: Sequence[tuple[Any, dict[str, float]]],
                      again: Sequence[tuple[int, tuple[Any, dict[str, float]]]]) -> OCRResult:
        """A lines page's OCRResult, as `_result` would make it for the assembled text. `again` holds the
        (view, generated) of the smaller views its misread views were read again in. `token_ids` are the views'
        generated tokens one view after the other, those read again last (they do not decode to `text`, which is
        assembled); `prompt_tokens` and `num_image_tokens` are the totals of all views read."""
        text, warnings = line_reader.read_page(prepared.page, view_texts, prepared.answer)
        replaced = {v for v, _ in again}
        outputs = [g for g, _ in generated] + [g for _, (g, _) in again]
        finish_reason, unfinished = line_reader.worst_finish(
            [g.finish_reason for v, (g, _) in enumerate(generated) if v not in replaced]
            + [g.finish_reason for _, (g, _) in again])
        parsed = parse_grounding(text, prepared.image_size)
        token_ids = tuple(t for g in outputs for t in g.token_ids)
        # The views decode side by side in one batch (the page took as long as its slowest view), those read
        # again after them.
        timings = {"preprocess": prepared.seconds}
        for key in ("prefill", "decode"):
            timings[key] = sum(max((getattr(g, f"{key}_seconds") for g, _ in batch), default=0.0)
                               for batch in (generated, [g for _, g in again]))
        if any("vision" in t for _, t in generated):
            timings["vision"] = sum(t.get("vision", 0.0) for _, t in (*generated, *(g for _, g in again)))
        if any("ttft" in t for _, t in generated):
            timings["ttft"] = max(t["ttft"] for _, t in generated)
        timings["tokens_per_second"] = len(token_ids) / timings["decode"] if timings["decode"] > 0 else 0.0
        image_tokens = sum(v.inputs.num_image_tokens for v in prepared.views)
        return OCRResult(
            text=text, markdown=parsed.markdown, blocks=parsed.blocks, token_ids=token_ids,
            finish_reason=finish_reason, image_size=prepared.image_size,
            num_image_tokens=image_tokens + len(again) * image_tokens // max(1, len(prepared.views)),
            prompt_tokens=sum(g.prompt_tokens for g in outputs), timings=timings,
            warnings=(*parsed.warnings, *warnings, *([unfinished] if unfinished else [])),
        )

    def engine_request(self, prepared: PreparedImage, sampling: SamplingParams,
                       on_text: Callable[[str], None] | None = None,
                       on_finish: Callable[[EngineRequest], None] | None = None) -> EngineRequest:
        """A request for the fast engine; `on_text` gets text pieces as they are generated. Not for pages of a
        model that reads lines (several views, one answer assembled at the end): run those with `run`."""
        _refuse_lines(prepared)
        on_token = None
        finish = on_finish
        if on_text:
            decoder = StreamDecoder(self.tokenizer)

            def on_token(token: int) -> None:
                piece = decoder.push(token)
                if piece:
                    on_text(piece)

            def finish(request: EngineRequest) -> None:
                tail = decoder.flush()
                if tail:
                    on_text(tail)
                if on_finish:
                    on_finish(request)
        return EngineRequest(prompt_ids=prepared.prompt_ids, params=sampling, image=prepared.inputs,
                             on_token=on_token, on_finish=finish)

    def result(self, prepared: PreparedImage, request: EngineRequest) -> OCRResult:
        """The OCRResult of a finished engine request."""
        _refuse_lines(prepared)
        return self._result(prepared.inputs, request, {"preprocess": prepared.seconds, "ttft": request.ttft})

    def _embed(self, inputs: Sequence[ImageInputs | DeferredImageInputs]) -> list[torch.Tensor]:
        """The images' visual embeddings, EMBED_IMAGES at a time (CPU_EMBED_IMAGES on a CPU): SAM's global
        attention holds a views x heads x tokens^2 bias, and a batch of dense pages read as lines can be a hundred
        views."""
        embeds: list[torch.Tensor] = []
        step = CPU_EMBED_IMAGES if self.model.device.type == "cpu" else EMBED_IMAGES
        for start in range(0, len(inputs), step):
            embeds += self._embed_group(inputs[start:start + step])
        return embeds

    def _embed_group(self, inputs: Sequence[ImageInputs | DeferredImageInputs]) -> list[torch.Tensor]:
        device, dtype = self.model.device, self.model.dtype
        # uint8 pixels travel to the device; normalisation happens there in float32, then the model dtype.
        views = [x.views(device) for x in inputs]
        global_views = normalize(torch.stack([g for g, _ in views])).to(dtype)
        crops = normalize(torch.cat([c for _, c in views])).to(dtype)
        with torch.inference_mode():
            return self.model.model.embed_images(global_views, crops, [x.num_crops for x in inputs])

    def _result(self, inputs: ImageInputs | DeferredImageInputs, generated: Any,
                timings: dict[str, float]) -> OCRResult:
        text = self.tokenizer.decode(generated.token_ids)  # EOS is never in token_ids
        parsed = parse_grounding(text, inputs.original_size)
        warnings = list(parsed.warnings)
        if generated.finish_reason == FINISH_REPETITION:
            warnings.append(f"output unfinished: stopped after {len(generated.token_ids)} tokens in a repetition loop")
        elif generated.finish_reason != FINISH_STOP:
            warnings.append(f"output unfinished: no end-of-sentence within {len(generated.token_ids)} tokens")
        timings = {**timings, "prefill": generated.prefill_seconds, "decode": generated.decode_seconds}
        n = len(generated.token_ids)
        timings["tokens_per_second"] = n / generated.decode_seconds if generated.decode_seconds > 0 else 0.0
        return OCRResult(
            text=text, markdown=parsed.markdown, blocks=parsed.blocks, token_ids=tuple(generated.token_ids),
            finish_reason=generated.finish_reason, image_size=inputs.original_size,
            num_image_tokens=inputs.num_image_tokens, prompt_tokens=generated.prompt_tokens, timings=timings,
            warnings=tuple(warnings),
        )


def _refuse_lines(prepared: object) -> None:
    if isinstance(prepared, PreparedLines):
        raise ConfigError("a page prepared for a model that reads lines is several line views with one "
                          "assembled answer; run it with OCR.run, not as a single engine request")


def load(model: str | os.PathLike, *, device: str | torch.device = "auto",
         dtype: str | torch.dtype = "auto") -> OCR:
    """Load a model directory or hub id; see `OCR.from_pretrained`."""
    return OCR.from_pretrained(model, device=device, dtype=dtype)

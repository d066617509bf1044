"""The `dsocr` command line: parses options, calls the library, maps DsocrError to one line and an exit code.

Must not contain model or preprocessing logic; everything it does is available from `dsocr.api`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click

from dsocr.errors import DsocrError

EXIT_INPUT_FAILED = 1  # some inputs failed, the others were processed
EXIT_USAGE = 2


class _CliError(click.ClickException):
    def show(self, file=None) -> None:
        click.echo(f"dsocr: error: {self.format_message()}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dsocr")
@click.option("-v", "--verbose", count=True, help="Log progress to stderr (-vv for debug).")
def main(verbose: int) -> None:
    """dsocr: DeepSeek-OCR 2 in native PyTorch."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


MODEL_HELP = ("Checkpoint directory or Hugging Face id. Default: $DSOCR_MODEL, else deepseek-ai/DeepSeek-OCR-2 "
              "if it is in the local Hugging Face cache, else the embedded model.")


def _model(model: str | None) -> str:
    """The model to load (`dsocr.hub.choose_model`), saying so on stderr when dsocr chose it."""
    from dsocr.hub import choose_model

    choice = choose_model(model)
    if choice.notice():
        click.echo(choice.notice(), err=True)
    return choice.model


def _uses_fast_engine(engine_name: str, device: str) -> bool:
    from dsocr.api import resolve_device, resolve_engine

    return resolve_engine(engine_name, resolve_device(device)) == "fast"


def engine_option(f):
    """--engine, shared by the commands that load a model."""
    return click.option(
        "--engine", "engine_name", type=click.Choice(["auto", "fast", "reference"]), default="auto",
        envvar="DSOCR_ENGINE", show_default=True,
        help="Generation engine: fast (continuous batching, paged KV cache, CUDA graphs), reference (the plain "
             "loop); auto = fast on CUDA, on CPU the plain loop with small-batch MoE and LM head kernels "
             "(env DSOCR_ENGINE).")(f)


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "-m", default=None, help=MODEL_HELP)
@click.option("--prompt", "-p", default="markdown", show_default=True,
              help="Preset (markdown, ocr, free, figure, describe, locate) or custom prompt text.")
@click.option("--locate", "locate_text", default=None, help="Phrase to find with --prompt locate.")
@click.option("--mode", envvar="DEEPSEEK_OCR_MODE", default="gundam", show_default=True,
              help="Resolution mode: gundam (crops + global view) or base (global view only).")
@click.option("--min-crops", type=int, default=None, help="Minimum number of crop tiles (default 2).")
@click.option("--max-crops", type=int, default=None, help="Maximum number of crop tiles (default 6).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--dtype", default="auto", show_default=True,
              help="auto (bfloat16 on CUDA; float32 on CPU, a lines model's vision in bfloat16 where the CPU has "
                   "native bfloat16), float32, bfloat16.")
@engine_option
@click.option("--max-tokens", type=int, default=8192, show_default=True, help="Maximum new tokens per image.")
@click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy.")
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--top-k", type=int, default=0, show_default=True, help="0 = off.")
@click.option("--seed", type=int, default=None, help="Seed for sampling.")
@click.option("--ngram-size", type=int, default=30, show_default=True,
              help="Windowed n-gram repetition guard (vLLM recipe); 0 = off.")
@click.option("--ngram-window", type=int, default=90, show_default=True)
@click.option("--no-repeat-ngram-size", type=int, default=0, show_default=True,
              help="Whole-sequence no-repeat n-gram (transformers style); 0 = off.")
@click.option("--batch-size", type=int, default=4, show_default=True, help="Images decoded together.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image per line (JSON Lines).")
@click.option("--raw", is_flag=True, help="Print the raw model output (grounding tags kept), not Markdown.")
@click.option("--stream", is_flag=True, help="Print raw output as it is generated (one image only).")
def ocr(images: Sequence[Path], model: str | None, prompt: str, mode: str, min_crops: int | None, max_crops: int | None,
        device: str, dtype: str, engine_name: str, max_tokens: int, temperature: float, top_p: float, top_k: int, seed: int | None,
        ngram_size: int, ngram_window: int, no_repeat_ngram_size: int, batch_size: int, as_json: bool,
        raw: bool, stream: bool, locate_text: str | None) -> None:
    """OCR IMAGES and print Markdown (or JSON) to stdout."""
    from dsocr.api import OCR
    from dsocr.engine.engine import EngineConfig
    from dsocr.generation.params import SamplingParams
    from dsocr.processing.image import load_image

    if stream and len(images) != 1:
        raise click.UsageError("--stream works with one image")
    if batch_size < 1:
        raise click.UsageError("--batch-size must be >= 1")
    try:
        sampling = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                                  seed=seed, ngram_size=ngram_size, ngram_window=ngram_window,
                                  no_repeat_ngram_size=no_repeat_ngram_size)
        # A few images: compiling the decode step (~30 s once per process) would cost more than it saves.
        engine = OCR.from_pretrained(_model(model), device=device, dtype=dtype, engine=engine_name,
                                     engine_config=EngineConfig(compile=False))
        config = engine.processing_config(mode, min_crops=min_crops, max_crops=max_crops)
    except DsocrError as e:
        raise _CliError(str(e)) from e

    # Decode every image first: a bad file is reported and skipped, the others still run.
    loaded, failures = [], 0
    for path in images:
        try:
            loaded.append((path, load_image(path, max_pixels=config.max_image_pixels)))
        except DsocrError as e:
            failures += 1
            click.echo(f"dsocr: error: {path}: {e}", err=True)
            if as_json:
                click.echo(json.dumps({"image": str(path), "error": str(e)}, ensure_ascii=False))

    on_text = (lambda _i, text: (sys.stdout.write(text), sys.stdout.flush())) if stream else None
    for start in range(0, len(loaded), batch_size):
        chunk = loaded[start:start + batch_size]
        try:
            results = engine.ocr_batch([img for _, img in chunk], prompt, mode=mode, min_crops=min_crops,
                                       max_crops=max_crops, sampling=sampling, locate_text=locate_text,
                                       on_text=on_text)
        except DsocrError as e:
            raise _CliError(str(e)) from e
        for (path, _), result in zip(chunk, results):
            _emit(path, result, as_json=as_json, raw=raw, streamed=stream, several=len(images) > 1)
            for warning in result.warnings:
                click.echo(f"dsocr: warning: {path}: {warning}", err=True)
    if failures:
        sys.exit(EXIT_INPUT_FAILED)


def _emit(path: Path, result, *, as_json: bool, raw: bool, streamed: bool, several: bool) -> None:
    if as_json:
        click.echo(json.dumps({"image": str(path), **result.to_dict()}, ensure_ascii=False))
        return
    if streamed:
        click.echo()
        return
    if several:
        click.echo(f"==> {path} <==")
    click.echo(result.text if raw else result.markdown)


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", "output_dir", required=True, type=click.Path(path_type=Path),
              help="Output folder: OUT/<name>/<name>.md, .json, ... per document.")
@click.option("--model", "-m", default=None, help=MODEL_HELP)
@click.option("--format", "formats", default="md,json", show_default=True,
              help="Comma-separated outputs: md, json, html, pdf (searchable PDF). JSON is always written.")
@click.option("--pages", default=None, help="Page ranges, 1-based: 1-3,7,10-")
@click.option("--password", default=None, help="Password of encrypted PDFs.")
@click.option("--dpi", type=float, default=144.0, show_default=True, help="PDF rendering resolution.")
@click.option("--prompt", "-p", default="markdown", show_default=True,
              help="Preset (markdown, ocr, free, figure, describe) or custom prompt text.")
@click.option("--mode", envvar="DEEPSEEK_OCR_MODE", default="gundam", show_default=True,
              help="Resolution mode: gundam (crops + global view) or base (global view only).")
@click.option("--min-crops", type=int, default=None, help="Minimum number of crop tiles (default 2).")
@click.option("--max-crops", type=int, default=None, help="Maximum number of crop tiles (default 6).")
@click.option("--max-tokens", type=int, default=8192, show_default=True, help="Maximum new tokens per page.")
@click.option("--ngram-size", type=int, default=30, show_default=True, help="Repetition guard n-gram; 0 = off.")
@click.option("--ngram-window", type=int, default=90, show_default=True)
@click.option("--retries", type=click.IntRange(0, 2), default=2, show_default=True,
              help="Loop-recovery retries for pages without an end (fewer crops, then page halves).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Pages decoded together [default: 64 with the fast engine, else 4].")
@engine_option
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Threads rendering and preprocessing pages ahead of the model.")
@click.option("--math", type=click.Choice(["brackets", "dollars"]), default="brackets", show_default=True,
              help="Math delimiters in the Markdown: \\(..\\) \\[..\\] or $..$ $$..$$.")
@click.option("--page-separator", default=None,
              help="Text between pages in the Markdown ({page} = next page number). "
                   "Default: the reference's '<--- Page Split --->'.")
@click.option("--no-figures", is_flag=True, help="Do not crop figures into images/.")
@click.option("--no-overlays", is_flag=True, help="Do not draw layout boxes into pages/.")
@click.option("--overwrite", is_flag=True, help="Redo documents whose outputs are complete and up to date.")
@click.option("--strict", is_flag=True, help="Exit 1 also when a page is truncated or repeating.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--dtype", default="auto", show_default=True,
              help="auto (bfloat16 on CUDA; float32 on CPU, a lines model's vision in bfloat16 where the CPU has "
                   "native bfloat16), float32, bfloat16.")
@click.option("--endpoint", default=None,
              help="Send pages to this OpenAI-compatible server (dsocr serve, vllm serve) instead of loading a "
                   "model, e.g. http://127.0.0.1:8000/v1.")
@click.option("--endpoint-model", default=None, help="Model name to ask the endpoint for (default: its first).")
@click.option("--endpoint-key", envvar="DSOCR_API_KEY", default=None, help="Bearer key of the endpoint.")
@click.option("--backend", type=click.Choice(["model", "stub"]), default="model", hidden=True,
              help="stub: no model, a fixed answer per page (pipeline benchmarks and demos).")
def convert(inputs: Sequence[str], output_dir: Path, model: str | None, formats: str, pages: str | None,
            password: str | None, dpi: float, prompt: str, mode: str, min_crops: int | None,
            max_crops: int | None, max_tokens: int, ngram_size: int, ngram_window: int, retries: int,
            batch_size: int | None, engine_name: str, workers: int, math: str, page_separator: str | None,
            no_figures: bool, no_overlays: bool, overwrite: bool, strict: bool, quiet: bool, device: str, dtype: str,
            endpoint: str | None, endpoint_model: str | None, endpoint_key: str | None, backend: str) -> None:
    """Convert documents (PDFs, images, folders, globs) to Markdown, JSON, HTML and searchable PDF."""
    from dsocr.generation.params import SamplingParams
    from dsocr.pipeline.backend import RemoteBackend, StubBackend, View
    from dsocr.pipeline.pipeline import Converter, ConvertOptions
    from dsocr.pipeline.sources import RenderSettings, expand_inputs
    from dsocr.pipeline.writers import DEFAULT_PAGE_SEPARATOR

    chosen = tuple(dict.fromkeys(f.strip().lower() for f in formats.split(",") if f.strip()))
    try:
        if batch_size is None:  # a big batch keeps the fast engine's GPU busy; the reference loop wants few
            on_model = backend == "model" and not endpoint
            batch_size = 64 if on_model and _uses_fast_engine(engine_name, device) else 4
        options = ConvertOptions(
            prompt=prompt, view=View(mode=mode, min_crops=min_crops, max_crops=max_crops),
            sampling=SamplingParams(max_new_tokens=max_tokens, ngram_size=ngram_size, ngram_window=ngram_window),
            render=RenderSettings(dpi=dpi), pages=pages, password=password, retries=retries,
            batch_size=batch_size, workers=workers, formats=chosen, figures=not no_figures,
            overlays=not no_overlays, page_separator=DEFAULT_PAGE_SEPARATOR if page_separator is None
            else page_separator.encode().decode("unicode_escape"), math=math)
        paths = expand_inputs(inputs)
        if not paths:
            raise click.UsageError("no input documents found")
        if backend == "stub":
            converter = Converter(StubBackend(), options)
        elif endpoint:
            converter = Converter(RemoteBackend(endpoint, model=endpoint_model, api_key=endpoint_key,
                                                concurrency=batch_size), options)
        else:
            converter = Converter.from_pretrained(_model(model), device=device, dtype=dtype, engine=engine_name,
                                                  options=options)
    except DsocrError as e:
        raise _CliError(str(e)) from e
    summary = _convert_all(converter, paths, output_dir, overwrite=overwrite, quiet=quiet)
    if summary.failed or (strict and summary.not_ok):
        sys.exit(EXIT_INPUT_FAILED)


class _Summary:
    def __init__(self) -> None:
        self.documents = self.skipped = self.failed_documents = 0
        self.counts: dict[str, int] = {}

    @property
    def failed(self) -> bool:
        return bool(self.failed_documents or self.counts.get("failed"))

    @property
    def not_ok(self) -> bool:
        return any(n for status, n in self.counts.items() if status != "ok")

    def add(self, doc) -> None:
        self.documents += 1
        if doc.error is not None:
            self.failed_documents += 1
        for status, n in doc.status_counts().items():
            self.counts[status] = self.counts.get(status, 0) + n

    def line(self, seconds: float) -> str:
        pages = sum(self.counts.values())
        statuses = ", ".join(f"{n} {s}" for s, n in self.counts.items() if n) or "none"
        extra = [f"{self.failed_documents} failed" if self.failed_documents else "",
                 f"{self.skipped} up to date" if self.skipped else ""]
        docs = _plural(self.documents, "document") + (f" ({', '.join(e for e in extra if e)})" if any(extra) else "")
        rate = f"{pages / seconds:.2f} pages/s" if seconds > 0 else ""
        return f"dsocr: {docs}, {_plural(pages, 'page')} ({statuses}) in {seconds:.1f} s, {rate}"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _convert_all(converter, paths: Sequence[Path], output_dir: Path, *, overwrite: bool, quiet: bool) -> _Summary:
    from tqdm import tqdm

    start = time.perf_counter()
    summary = _Summary()
    # The width is read once (a terminal that reports none, like a bare pty, gets 80 columns).
    bar = tqdm(total=0, unit="page", disable=quiet or not sys.stderr.isatty(), file=sys.stderr,
               ncols=shutil.get_terminal_size().columns)

    def on_progress(event) -> None:
        if event.kind == "document":
            bar.total += event.pages
            bar.refresh()
            if event.resumed and not quiet:
                bar.write(f"dsocr: {event.document.source}: resuming, {event.resumed} of "
                          f"{event.resumed + event.pages} pages already done", file=sys.stderr)
        elif event.kind == "page":
            bar.update(1)
            page = event.page
            if page.status != "ok":
                bar.write(f"dsocr: warning: {event.document.source}: page {page.number} {page.status}: "
                          f"{page.reason}", file=sys.stderr)
        elif event.kind == "skipped":
            summary.skipped += 1

    with bar:
        for doc in converter.convert_many(paths, output_dir=output_dir, overwrite=overwrite,
                                          on_progress=on_progress):
            summary.add(doc)
            if doc.error is not None:
                bar.write(f"dsocr: error: {doc.error}", file=sys.stderr)
    if not quiet:
        click.echo(summary.line(time.perf_counter() - start), err=True)
    return summary


@main.command()
@click.option("--model", "-m", default=None, help=MODEL_HELP)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8000, show_default=True)
@click.option("--api-key", "api_keys", multiple=True, envvar="DSOCR_API_KEY",
              help="Require 'Authorization: Bearer KEY' (repeatable; env DSOCR_API_KEY).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("dsocr-data"), show_default=True,
              help="Where jobs (SQLite) and their files are kept.")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--max-batch", type=click.IntRange(min=1), default=None,
              help="Requests decoded together [default: 64 with the fast engine, else 8].")
@engine_option
@click.option("--max-queue", type=click.IntRange(min=1), default=64, show_default=True,
              help="Requests waiting for the model before new ones get 429.")
@click.option("--max-upload-mb", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--max-pages", type=click.IntRange(min=1), default=500, show_default=True,
              help="Pages per document.")
@click.option("--max-tokens", type=click.IntRange(min=1), default=8192, show_default=True,
              help="Default and ceiling of max_tokens.")
@click.option("--timeout", type=float, default=600.0, show_default=True,
              help="Seconds a synchronous request may take (504 after).")
@click.option("--allow-image-host", "image_hosts", multiple=True,
              help="Allow remote image URLs from this host (repeatable); by default only data: URIs.")
def serve(model: str | None, host: str, port: int, api_keys: Sequence[str], data_dir: Path, device: str, dtype: str,
          max_batch: int, max_queue: int, max_upload_mb: int, max_pages: int, max_tokens: int, timeout: float,
          image_hosts: Sequence[str], engine_name: str) -> None:
    """Serve the model over HTTP: OpenAI-compatible API, document jobs and a web page."""
    import uvicorn

    from dsocr.api import OCR
    from dsocr.engine.engine import EngineConfig
    from dsocr.server.app import ServerSettings, create_app
    from dsocr.server.engine import Engine

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        model = _model(model)
        fast = _uses_fast_engine(engine_name, device)
        max_batch = max_batch or (64 if fast else 8)
        ocr_model = OCR.from_pretrained(model, device=device, dtype=dtype, engine=engine_name,
                                        engine_config=EngineConfig(max_batch=max_batch))
        engine = Engine(ocr_model, max_batch=max_batch, max_queue=max_queue)
    except (DsocrError, OSError) as e:
        raise _CliError(str(e)) from e
    settings = ServerSettings(data_dir=data_dir, api_keys=tuple(k for k in api_keys if k),
                              max_upload_bytes=max_upload_mb * 2**20, max_pages=max_pages, max_tokens=max_tokens,
                              request_timeout=timeout, allowed_image_hosts=tuple(image_hosts))
    logging.getLogger("dsocr.server").setLevel(logging.INFO)
    click.echo(f"dsocr: serving {model} on http://{host}:{port} (data in {data_dir})", err=True)
    try:
        uvicorn.run(create_app(engine, settings), host=host, port=port, log_level="warning")
    finally:
        engine.stop()


@main.command()
@click.option("--output", "-o", "output_dir", type=click.Path(path_type=Path), required=True,
              help="Run folder: checkpoints in the official layout (loadable with --model), log, resume state.")
@click.option("--model", "-m", default=None,
              help="Fine-tune this checkpoint (directory or Hugging Face id); without it, train from scratch.")
@click.option("--preset", type=click.Choice(["embedded", "tiny"]), default="embedded", show_default=True,
              help="From scratch: the model size (embedded ~19M parameters; tiny for tests).")
@click.option("--data", default=None, help="Folder of images with .md/.txt targets, or a JSONL of "
              '{"image", "text", "prompt"}; default: synthetic pages.')
@click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Peak learning rate.")
@click.option("--warmup-steps", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--lora-rank", type=click.IntRange(min=0), default=0, show_default=True,
              help="> 0: LoRA on the attention projections (decoder and flow encoder), everything else frozen.")
@click.option("--freeze-vision", is_flag=True, help="Full fine-tuning of the decoder only.")
@click.option("--vision-lr-scale", type=click.FloatRange(min=0, min_open=True), default=None,
              help="The vision tower's learning rate as a share of --lr (default: 0.1 from scratch, where "
                   "the full rate collapses its output and the model never reads; 1 when fine-tuning).")
@click.option("--glyph-weight", type=click.FloatRange(min=0), default=None,
              help="Weight of the glyph loss on synthetic pages: which characters each vision cell shows, the "
                   "vision tower's own signal from the first step (default: 0.1 from scratch, 0 when fine-tuning).")
@click.option("--glyph-slots", is_flag=True,
              help="Experimental: the glyph loss asks for the character in every 16x16 slot of each cell, not the "
                   "cell's bag of characters.")
@click.option("--align-weight", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Weight of the alignment loss on synthetic pages (experimental): two decoder layers' attention "
                   "on the image cells showing the token read and the token predicted.")
@click.option("--snippets", type=click.FloatRange(min=0, max=1), default=0.0, show_default=True,
              help="Synthetic data: the share of small pages of a few large lines (where reading starts).")
@click.option("--snippet-fonts", type=(click.IntRange(6, 200), click.IntRange(6, 200)), default=None,
              metavar="LO HI", help="The snippets' body text size in px (default 16 30): larger print is easier.")
@click.option("--strips", type=click.FloatRange(min=0, max=1), default=0.0, show_default=True,
              help="Synthetic data: the share of line views (rows of print, one line each), what a model that "
                   "reads lines sees (the embedded model; needs --mode base); 1: line views only.")
@click.option("--fonts", "font_dirs", envvar="DSOCR_FONTS", default=None, metavar="DIR[:DIR...]",
              help="Line views: also draw rows in the font families of dsocr.training.fonts found in these folders "
                   "(e.g. /usr/share/fonts; scripts/collect_fonts.sh fills one) (env DSOCR_FONTS).")
@click.option("--query-positions", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="From scratch (experimental): the causal-flow query tables start as 2D position codes of this "
                   "size (0: random), so the decoder knows where on the view each visual token is.")
@click.option("--mode", type=click.Choice(["gundam", "base"]), default="gundam", show_default=True,
              help="The views the model learns from (crops + global view, or the global view only).")
@click.option("--eval-every", type=click.IntRange(min=1), default=250, show_default=True)
@click.option("--eval-pages", type=click.IntRange(min=0), default=16, show_default=True)
@click.option("--save-every", type=click.IntRange(min=1), default=250, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="Processes making training examples.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--time-limit", type=float, default=None,
              help="Minutes: save and stop when reached (rerun the command to go on).")
def train(output_dir: Path, model: str | None, preset: str, data: str | None, steps: int, batch_size: int,
          lr: float, warmup_steps: int, lora_rank: int, freeze_vision: bool, vision_lr_scale: float | None,
          glyph_weight: float | None, glyph_slots: bool, align_weight: float, snippets: float,
          snippet_fonts: tuple[int, int] | None, strips: float, query_positions: float, mode: str, eval_every: int,
          eval_pages: int, save_every: int, workers: int, seed: int, device: str,
          time_limit: float | None, font_dirs: str | None) -> None:
    """Train a model (from scratch) or fine-tune one (LoRA or full) on (image, text) pairs.

    An existing run folder is resumed from its last saved step."""
    from dsocr.training.train import TrainConfig, Trainer

    if font_dirs:
        _use_fonts(font_dirs)
    try:
        config = TrainConfig(output_dir=output_dir, model=model, preset=preset, data=data, steps=steps,
                             batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, lora_rank=lora_rank,
                             freeze_vision=freeze_vision, mode=mode, eval_every=eval_every, eval_pages=eval_pages,
                             vision_lr_scale=vision_lr_scale, glyph_weight=glyph_weight, glyph_slots=glyph_slots,
                             align_weight=align_weight,
                             snippets=snippets, snippet_fonts=snippet_fonts, query_positions=query_positions,
                             strips=strips, **({"prompts": ("free",)} if strips >= 1 else {}),
                             save_every=save_every, workers=workers, seed=seed, device=device,
                             time_limit=time_limit)
        trainer = Trainer(config, on_log=lambda record: click.echo(json.dumps(record), err=True))
        trainer.train()
    except DsocrError as e:
        raise _CliError(str(e)) from e
    click.echo(f"dsocr: trained to step {trainer.step}; use it with --model {output_dir}", err=True)


def _use_fonts(font_dirs: str) -> None:
    """Point DSOCR_FONTS (read by the data workers too) at `font_dirs`, which must hold an extra family."""
    from dsocr.training import fonts

    missing = [d for d in font_dirs.split(os.pathsep) if d and not Path(d).expanduser().is_dir()]
    if missing:
        raise _CliError(f"--fonts: no such folder: {', '.join(missing)}")
    os.environ[fonts.FONTS_ENV] = font_dirs
    found = fonts.extra_families()
    if not found:
        raise _CliError(f"--fonts: none of the font families of dsocr.training.fonts is complete in {font_dirs} "
                        "(scripts/collect_fonts.sh fetches them)")
    click.echo(f"dsocr: line views also drawn in {len(found)} font families from {font_dirs}", err=True)

"""The `dsocr` command line: parses options, calls the library, maps DsocrError to one line and an exit code.

Must not contain model or preprocessing logic; everything it does is available from `dsocr.api`.
"""

from __future__ import annotations

import json
import logging
import sys
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


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "-m", envvar="DSOCR_MODEL", default="deepseek-ai/DeepSeek-OCR-2", show_default=True,
              help="Checkpoint directory or Hugging Face id (env DSOCR_MODEL).")
@click.option("--prompt", "-p", default="markdown", show_default=True,
              help="Preset (markdown, ocr, free, figure, describe, locate) or custom prompt text.")
@click.option("--locate", "locate_text", default=None, help="Phrase to find with --prompt locate.")
@click.option("--mode", envvar="DEEPSEEK_OCR_MODE", default="gundam", show_default=True,
              help="Resolution mode: gundam (crops + global view) or base (global view only).")
@click.option("--min-crops", type=int, default=None, help="Minimum number of crop tiles (default 2).")
@click.option("--max-crops", type=int, default=None, help="Maximum number of crop tiles (default 6).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--dtype", default="auto", show_default=True,
              help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16.")
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
def ocr(images: Sequence[Path], model: str, prompt: str, mode: str, min_crops: int | None, max_crops: int | None,
        device: str, dtype: str, max_tokens: int, temperature: float, top_p: float, top_k: int, seed: int | None,
        ngram_size: int, ngram_window: int, no_repeat_ngram_size: int, batch_size: int, as_json: bool,
        raw: bool, stream: bool, locate_text: str | None) -> None:
    """OCR IMAGES and print Markdown (or JSON) to stdout."""
    from dsocr.api import OCR
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
        engine = OCR.from_pretrained(model, device=device, dtype=dtype)
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

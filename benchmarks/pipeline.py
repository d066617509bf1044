"""The document pipeline's own cost per page, around the stub backend (no model).

A PDF of `--pages` pages (the two pages of examples/sample.pdf, repeated) is converted with the stub
backend and the default outputs (Markdown, JSON, figure crops, box overlays), two ways:

- baseline: a plain sequential loop over the public functions: render, preprocess, answer, write;
- pipeline: `Converter.convert` (worker threads render and preprocess ahead, bounded queue, batching);

and for both kinds of preprocessing: views cut on the CPU with Pillow (what a CPU backend does) and views
deferred to the model's device (what a CUDA backend does: the CPU only turns the page into a uint8 tensor,
the device cuts the views bit-identically, see dsocr/processing/resample.py).

It prints the per-component cost of the baseline (render + preprocess + write = what the pipeline adds to
the model's time per page) and pages/s of baseline and pipeline side by side. `--one-core` pins the
process to one CPU core and one torch thread, which is how the "<60 ms per page" target is stated. With
`--device cuda` it also times cutting the views on the GPU and checks them against Pillow's bytes.

    python benchmarks/pipeline.py [--pages 40] [--dpi 144] [--one-core] [--workers 2] [--batch-size 4]
                                  [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import pypdfium2 as pdfium
import torch

from dsocr.generation.params import SamplingParams
from dsocr.output.grounding import parse_grounding
from dsocr.pipeline.backend import StubBackend, View
from dsocr.pipeline.document import Document, Page, PointMapper, make_blocks
from dsocr.pipeline.pipeline import Converter, ConvertOptions
from dsocr.pipeline.sources import RenderSettings, open_source
from dsocr.pipeline.writers import (
    atomic_write,
    document_markdown,
    figure_path,
    page_markdown_from_blocks,
    save_figures,
    save_overlay,
)
from dsocr.processing.image import preprocess_image, processing_config_for_mode

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sample.pdf"


def make_pdf(path: Path, pages: int) -> None:
    source = pdfium.PdfDocument(SAMPLE)
    out = pdfium.PdfDocument.new()
    while len(out) < pages:
        out.import_pages(source, list(range(min(len(source), pages - len(out)))))
    out.save(path)


def baseline(pdf: Path, out: Path, dpi: float, defer: bool) -> tuple[float, dict[str, list[float]]]:
    """Sequential: each page rendered, preprocessed, answered and written before the next one starts."""
    backend = StubBackend(defer_views=defer)
    source = open_source(pdf, render=RenderSettings(dpi=dpi))
    times: dict[str, list[float]] = {"render": [], "preprocess": [], "answer": [], "write": []}
    doc = Document(source=str(pdf), name="doc", kind="pdf", num_pages=source.num_pages)
    folder = out / "doc"
    start = time.perf_counter()
    for index in range(source.num_pages):
        t0 = time.perf_counter()
        rendered = source.render(index)
        t1 = time.perf_counter()
        prepared = backend.prepare(rendered.image, None, View())
        t2 = time.perf_counter()
        (output,) = backend.generate([prepared], SamplingParams())
        size = rendered.image.size
        page = Page(index=index, width=size[0], height=size[1], dpi=rendered.dpi)
        page.blocks = make_blocks(parse_grounding(output.text, size).blocks, size, PointMapper(*size, *rendered.size_pt))
        figures = [b for b in page.blocks if b.label == "image"]
        for n, block in enumerate(figures):
            block.figures = [figure_path(page, n)]
        page.markdown = page_markdown_from_blocks(page.blocks)
        t3 = time.perf_counter()
        save_figures(page, rendered.image, folder)
        save_overlay(page, rendered.image, folder)
        atomic_write(folder / ".partial" / f"page-{page.number:04d}.json", str(page.to_dict()))
        doc.pages.append(page)
        t4 = time.perf_counter()
        for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            times[key].append(value)
    t5 = time.perf_counter()
    atomic_write(folder / "doc.md", document_markdown(doc))
    atomic_write(folder / "doc.json", doc.to_json())
    times["write"][-1] += time.perf_counter() - t5
    source.close()
    return time.perf_counter() - start, times


def pipeline(pdf: Path, out: Path, dpi: float, workers: int, batch_size: int, defer: bool) -> float:
    options = ConvertOptions(render=RenderSettings(dpi=dpi), workers=workers, batch_size=batch_size)
    start = time.perf_counter()
    doc = Converter(StubBackend(defer_views=defer), options).convert(pdf, output_dir=out)
    assert all(p.status == "ok" for p in doc.pages)
    return time.perf_counter() - start


def device_views(pdf: Path, dpi: float, device: str) -> tuple[float, bool]:
    """Milliseconds per page to cut the views on `device`, and whether they equal Pillow's bytes."""
    source = open_source(pdf, render=RenderSettings(dpi=dpi))
    config = processing_config_for_mode("gundam")
    pages = [preprocess_image(source.render(i).image, config, defer=True) for i in range(min(2, source.num_pages))]
    eager = [preprocess_image(source.render(i).image, config) for i in range(len(pages))]
    exact = all(torch.equal(p.views(device)[0].cpu(), e.global_pixels)
                and torch.equal(p.views(device)[1].cpu(), e.crop_pixels) for p, e in zip(pages, eager))
    runs = 20
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(runs):
        pages[i % len(pages)].views(device)
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - start) / runs, exact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--dpi", type=float, default=144.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--one-core", action="store_true", help="pin to one CPU core and one torch thread")
    parser.add_argument("--device", default=None, help="also time cutting the views on this device (cuda)")
    args = parser.parse_args()
    if args.one_core:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        torch.set_num_threads(1)
    cores = len(os.sched_getaffinity(0))
    print(f"# {args.pages} pages of examples/sample.pdf at {args.dpi:g} DPI, {cores} core(s), "
          f"torch threads {torch.get_num_threads()}, workers {args.workers}, batch {args.batch_size}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pdf = Path(tmp) / "bench.pdf"
        make_pdf(pdf, args.pages)
        pipeline(pdf, Path(tmp) / "warmup", args.dpi, args.workers, args.batch_size, False)  # imports, caches
        for defer in (False, True):
            base_s, times = baseline(pdf, Path(tmp) / f"base{defer}", args.dpi, defer)
            pipe_s = pipeline(pdf, Path(tmp) / f"pipe{defer}", args.dpi, args.workers, args.batch_size, defer)
            rows.append(("views on the device" if defer else "views on the CPU", base_s, pipe_s, times))
        gpu = device_views(pdf, args.dpi, args.device) if args.device else None
    print(f"{'per page, sequential (ms)':28s} {'render':>7s} {'preproc':>8s} {'write':>7s} {'total':>7s}")
    for name, _, _, times in rows:
        ms = {k: 1000 * statistics.mean(v) for k, v in times.items()}
        total = ms["render"] + ms["preprocess"] + ms["write"]
        print(f"{name:28s} {ms['render']:7.1f} {ms['preprocess']:8.1f} {ms['write']:7.1f} {total:7.1f}")
    print()
    print(f"{'pages/s':28s} {'baseline':>9s} {'pipeline':>9s} {'ratio':>7s}")
    for name, base_s, pipe_s, _ in rows:
        print(f"{name:28s} {args.pages / base_s:9.2f} {args.pages / pipe_s:9.2f} {base_s / pipe_s:6.2f}x")
    if gpu is not None:
        print(f"\ncutting the views on {args.device}: {gpu[0]:.2f} ms/page, identical to Pillow: {gpu[1]}")


if __name__ == "__main__":
    main()

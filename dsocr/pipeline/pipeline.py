"""The document pipeline: documents in, `Document`s out, pages of many documents batched for the model.

Must not parse command lines or print; progress goes to callbacks.

Data flow (one producer thread, a pool of worker threads, the model on the calling thread):

    producer: open document -> resume state -> for each page to do: submit render+prepare to the pool
              -> bounded queue of futures (memory stays flat: at most `prefetch` pages in flight)
    caller:   take up to `batch_size` pages (any documents) -> backend.generate -> status -> retries
              -> per-page files (figures, overlay, resume record) -> when a document's pages are all done:
              its Markdown/HTML/PDF, then its JSON (the JSON is written last: it marks the document complete)

Documents come out in input order, pages in page order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from dsocr.errors import ConfigError, DsocrError
from dsocr.generation.params import SamplingParams
from dsocr.output.grounding import Block as GroundingBlock
from dsocr.output.grounding import parse_grounding
from dsocr.pipeline import recovery
from dsocr.pipeline.backend import Backend, PageOutput, View, num_crops
from dsocr.pipeline.document import (
    FAILED,
    OK,
    SCHEMA_VERSION,
    Attempt,
    Document,
    Page,
    PointMapper,
    make_blocks,
)
from dsocr.pipeline.sources import (
    PDFIUM_LOCK,
    ImageSource,
    PdfSource,
    RenderedPage,
    RenderSettings,
    open_source,
    parse_page_ranges,
    select_pages,
)
from dsocr.pipeline.writers import (
    DEFAULT_PAGE_SEPARATOR,
    FORMATS,
    MATH_STYLES,
    atomic_write,
    document_html,
    document_markdown,
    figure_path,
    page_markdown_from_blocks,
    plain_text,
    save_figures,
    save_overlay,
)
from dsocr.processing.prompts import resolve_prompt

logger = logging.getLogger(__name__)

PARTIAL_DIR = ".partial"  # per-page resume records of a document in progress
FIGURE_LABEL = "image"
BATCH_WAIT_SECONDS = 0.25  # a partial batch runs when no page has come for this long (pages render faster)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConvertOptions:
    prompt: str | None = None  # preset name or text; None = "markdown" (grounded)
    view: View = field(default_factory=View)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    render: RenderSettings = field(default_factory=RenderSettings)
    pages: str | None = None  # "1-3,7,10-"; None = all
    password: str | None = None
    retries: int = 2  # loop-recovery retries per page (0 = off), see recovery.STRATEGIES
    batch_size: int = 4  # pages decoded together (from any documents)
    workers: int = 2  # threads rendering and preprocessing ahead of the model
    formats: tuple[str, ...] = ("md", "json")
    figures: bool = True  # crop figures into images/
    overlays: bool = True  # draw boxes into pages/
    page_separator: str = DEFAULT_PAGE_SEPARATOR
    math: str = "brackets"  # or "dollars"

    def __post_init__(self) -> None:
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise ConfigError(f"format: {','.join(unknown) or 'none'} not in {', '.join(FORMATS)}")
        if self.math not in MATH_STYLES:
            raise ConfigError(f"math: {self.math!r} is not one of {', '.join(MATH_STYLES)}")
        if not 0 <= self.retries <= len(recovery.STRATEGIES):
            raise ConfigError(f"retries: must be 0..{len(recovery.STRATEGIES)}, got {self.retries}")
        if self.batch_size < 1 or self.workers < 1:
            raise ConfigError("batch size and workers must be >= 1")
        parse_page_ranges(self.pages)  # fail early on a bad page range
        resolve_prompt(self.prompt)

    def settings(self, model: str) -> dict[str, Any]:
        """Everything that changes the output (formats, workers and batch size do not)."""
        return {
            "schema_version": SCHEMA_VERSION, "model": model, "prompt": resolve_prompt(self.prompt),
            "view": dataclasses.asdict(self.view), "sampling": dataclasses.asdict(self.sampling),
            "render": dataclasses.asdict(self.render), "pages": self.pages, "retries": self.retries,
            "figures": self.figures, "overlays": self.overlays, "page_separator": self.page_separator,
            "math": self.math,
        }


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Progress:
    """What a callback is told. `kind`: "document" (opened), "page" (done), "finished" (document complete),
    "skipped" (already up to date)."""

    kind: str
    document: Document
    page: Page | None = None
    pages: int = 0  # "document": pages still to do
    resumed: int = 0  # "document": pages already done by an interrupted run


ProgressCallback = Callable[[Progress], None]


class Converter:
    """Converts documents with a backend. `convert` returns a `Document`; with `output_dir` it also writes
    `OUT/<name>/<name>.{md,json,html,pdf}`, `images/` and `pages/`, and resumes interrupted work there."""

    def __init__(self, backend: Backend, options: ConvertOptions | None = None) -> None:
        self.backend = backend
        self.options = options or ConvertOptions()

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike, *, device: str = "auto", dtype: str = "auto",
                        engine: str = "auto", options: ConvertOptions | None = None) -> Converter:
        from dsocr.api import OCR  # torch only when a model is really loaded
        from dsocr.pipeline.backend import ModelBackend

        ocr = OCR.from_pretrained(model, device=device, dtype=dtype, engine=engine)
        ocr.check_prompt((options or ConvertOptions()).prompt)  # a lines model reads documents only: now
        return cls(ModelBackend(ocr), options)

    def convert(self, path: str | os.PathLike, *, output_dir: str | os.PathLike | None = None,
                overwrite: bool = False) -> Document:
        (doc,) = self.convert_many([path], output_dir=output_dir, overwrite=overwrite)  # runs it to the end
        return doc

    def convert_many(self, paths: Iterable[str | os.PathLike], *, output_dir: str | os.PathLike | None = None,
                     overwrite: bool = False, on_progress: ProgressCallback | None = None) -> Iterator[Document]:
        """Documents in input order; a document that cannot be read comes back with `error` set."""
        run = _Run(self.backend, self.options, Path(output_dir) if output_dir is not None else None,
                   overwrite, on_progress or (lambda _p: None))
        yield from run.documents([Path(p) for p in paths])


def output_names(paths: Sequence[Path]) -> list[str]:
    """Output folder names: the file stem, made unique with the extension (then a number) on collision."""
    names: list[str] = []
    taken: set[str] = set()
    stems = [p.stem or p.name for p in paths]
    for path, stem in zip(paths, stems):
        name = stem if stems.count(stem) == 1 else f"{stem}-{path.suffix.lstrip('.').lower() or 'file'}"
        base, n = name, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        taken.add(name)
        names.append(name)
    return names


# --- one run --------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class _Job:
    """One document on its way through the pipeline."""

    doc: Document
    out_dir: Path | None = None
    source: PdfSource | ImageSource | None = None
    done: dict[int, Page] = field(default_factory=dict)
    todo: list[int] = field(default_factory=list)
    all_submitted: bool = False
    finished: bool = False  # nothing to do at all (error, or up to date)
    skipped: bool = False  # up to date: `doc` is the previous run's


@dataclass(slots=True, eq=False)
class _Work:
    """One page in flight: rendered and prepared by a worker."""

    job: _Job
    index: int
    future: Future


@dataclass(slots=True)
class _Answer:
    strategy: str
    output: PageOutput
    blocks: tuple[GroundingBlock, ...]
    warnings: tuple[str, ...]
    status: str
    reason: str


_END = object()


class _Run:
    def __init__(self, backend: Backend, options: ConvertOptions, out: Path | None, overwrite: bool,
                 on_progress: ProgressCallback) -> None:
        self.backend, self.options, self.out, self.overwrite = backend, options, out, overwrite
        self.on_progress = on_progress
        self.settings = options.settings(backend.name)
        self.settings_hash = settings_hash(self.settings)
        self.ranges = parse_page_ranges(options.pages)
        self.stop = threading.Event()

    def documents(self, paths: list[Path]) -> Iterator[Document]:
        prefetch = max(2 * self.options.batch_size, self.options.workers)
        items: queue.Queue = queue.Queue(maxsize=prefetch)
        pool = ThreadPoolExecutor(self.options.workers, thread_name_prefix="dsocr-render")
        producer = threading.Thread(target=self._produce, args=(paths, items, pool), daemon=True,
                                    name="dsocr-producer")
        producer.start()
        jobs: deque[_Job] = deque()
        batch: list[_Work] = []
        try:
            while True:
                item = self._next(items, wait=not batch)
                if item is None or item is _END or isinstance(item, _Work) and len(batch) + 1 >= \
                        self.options.batch_size:
                    if isinstance(item, _Work):
                        batch.append(item)
                    if batch:
                        self._run_batch(batch)
                        batch = []
                    yield from self._completed(jobs)
                    if item is _END:
                        break
                elif isinstance(item, _Work):
                    batch.append(item)
                else:  # a new document
                    jobs.append(item)
                    self._announce(item)
                    yield from self._completed(jobs)
        finally:
            self.stop.set()
            _drain(items)
            pool.shutdown(wait=True, cancel_futures=True)
            producer.join()
            for job in jobs:
                _close(job)

    def _announce(self, job: _Job) -> None:
        """Progress events are all sent from the caller's thread, this one included."""
        if job.skipped:
            self.on_progress(Progress("skipped", job.doc))
        elif job.doc.error is None:
            self.on_progress(Progress("document", job.doc, pages=len(job.todo) - len(job.done),
                                      resumed=len(job.done)))

    def _next(self, items: queue.Queue, *, wait: bool) -> Any:
        """The next item; None when a partial batch is waiting and nothing more is ready soon."""
        try:
            return items.get() if wait else items.get(timeout=BATCH_WAIT_SECONDS)
        except queue.Empty:
            return None

    def _completed(self, jobs: deque[_Job]) -> Iterator[Document]:
        """Finish and hand out documents from the front, in input order, as soon as they are complete."""
        while jobs and (jobs[0].finished or (jobs[0].all_submitted and len(jobs[0].done) == len(jobs[0].todo))):
            job = jobs.popleft()
            if not job.finished:
                self._finish(job)
            yield job.doc

    # --- producer (its own thread) ---

    def _produce(self, paths: list[Path], items: queue.Queue, pool: ThreadPoolExecutor) -> None:
        try:
            for path, name in zip(paths, output_names(paths)):
                if self.stop.is_set():
                    return
                job = self._open(path, name)
                self._put(items, job)
                if job.finished:
                    continue
                for index in job.todo:
                    if index in job.done:
                        continue
                    future = pool.submit(self._render_prepare, job, index)
                    if not self._put(items, _Work(job, index, future)):
                        return
                job.all_submitted = True
        except BaseException:  # never leave the consumer waiting forever
            logger.exception("document producer failed")
        finally:
            self._put(items, _END)

    def _put(self, items: queue.Queue, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _open(self, path: Path, name: str) -> _Job:
        doc = Document(source=str(path), name=name, kind="", settings=self.settings,
                       settings_hash=self.settings_hash, model=self.backend.name)
        job = _Job(doc, out_dir=self.out / name if self.out is not None else None)
        try:
            source = open_source(path, password=self.options.password, render=self.options.render)
            doc.kind, doc.num_pages = source.kind, source.num_pages
            job.todo = select_pages(self.ranges, source.num_pages)
            doc.sha256 = file_sha256(path)
        except (DsocrError, OSError) as e:
            if "source" in locals():
                _close_source(source)
            message = str(e)
            doc.error = message if str(path) in message else f"{path}: {message}"
            job.finished = True
            return job
        job.source = source
        if job.out_dir is not None:
            if not self.overwrite and (complete := self._up_to_date(job)) is not None:
                _close(job)
                job.doc, job.finished, job.skipped = complete, True, True
                return job
            job.done = self._resume(job)
        return job

    def _render_prepare(self, job: _Job, index: int) -> tuple[RenderedPage, Any, float, float]:
        start = time.perf_counter()
        rendered = job.source.render(index)
        mid = time.perf_counter()
        prepared = self.backend.prepare(rendered.image, self.options.prompt, self.options.view)
        return rendered, prepared, mid - start, time.perf_counter() - mid

    # --- resume ---

    def _up_to_date(self, job: _Job) -> Document | None:
        """The finished document from a previous run with the same input and settings, if all files exist."""
        json_path = job.out_dir / f"{job.doc.name}.json"
        try:
            previous = Document.from_dict(json.loads(json_path.read_text("utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if (previous.sha256, previous.settings_hash) != (job.doc.sha256, job.doc.settings_hash):
            return None
        if not all((job.out_dir / f"{job.doc.name}.{fmt}").exists() for fmt in self.options.formats):
            return None
        return previous

    def _resume(self, job: _Job) -> dict[int, Page]:
        """Pages finished by an interrupted run with the same input and settings; stale records are removed."""
        partial = job.out_dir / PARTIAL_DIR
        stamp = {"sha256": job.doc.sha256, "settings_hash": job.doc.settings_hash}
        try:
            if json.loads((partial / "run.json").read_text("utf-8")) == stamp:
                done = {}
                for index in job.todo:
                    record = partial / f"page-{index + 1:04d}.json"
                    if record.exists():
                        done[index] = Page.from_dict(json.loads(record.read_text("utf-8")))
                return done
        except (OSError, ValueError, KeyError, TypeError):
            pass
        shutil.rmtree(partial, ignore_errors=True)
        atomic_write(partial / "run.json", json.dumps(stamp))
        return {}

    # --- pages ---

    def _run_batch(self, batch: list[_Work]) -> None:
        ready: list[tuple[_Work, RenderedPage, Any, dict[str, float]]] = []
        for work in batch:
            try:
                rendered, prepared, render_s, prepare_s = work.future.result()
            except Exception as e:  # noqa: BLE001 - a page that cannot be rendered fails alone
                self._page_done(work.job, _failed_page(work.index, f"cannot render or prepare the page: {e}"))
                continue
            ready.append((work, rendered, prepared, {"render": render_s, "preprocess": prepare_s}))
        if not ready:
            return
        outputs = self._generate([p for _, _, p, _ in ready], self.options.sampling)
        for (work, rendered, _, timings), output in zip(ready, outputs):
            if isinstance(output, Exception):
                self._page_done(work.job, _failed_page(work.index, f"model error: {output}", rendered))
                continue
            answers = [self._answer("original", output, rendered.image.size)]
            if answers[0].status != OK:
                answers += self._retry(rendered)
            self._page_done(work.job, self._page(work.job, rendered, answers, timings), rendered.image)

    def _generate(self, prepared: list[Any], sampling: SamplingParams) -> list[PageOutput | Exception]:
        """One batch; if it fails, each page alone, so one bad page does not take the others with it."""
        start = time.perf_counter()
        try:
            outputs: list[PageOutput | Exception] = list(self.backend.generate(prepared, sampling))
        except Exception as batch_error:  # noqa: BLE001
            if len(prepared) == 1:
                return [batch_error]
            outputs = []
            for p in prepared:
                try:
                    outputs.extend(self.backend.generate([p], sampling))
                except Exception as e:  # noqa: BLE001
                    outputs.append(e)
        seconds = (time.perf_counter() - start) / len(prepared)
        for output in outputs:
            if isinstance(output, PageOutput):
                output.timings.setdefault("generate", seconds)
        return outputs

    def _answer(self, strategy: str, output: PageOutput, size: tuple[int, int]) -> _Answer:
        parsed = parse_grounding(output.text, size)
        status, reason = recovery.classify(output.finish_reason, output.token_ids,
                                           self.options.sampling.max_new_tokens)
        return _Answer(strategy, output, parsed.blocks, parsed.warnings, status, reason)

    def _retry(self, rendered: RenderedPage) -> list[_Answer]:
        """Loop recovery: the strategies in order until one ends with EOS (see recovery.py)."""
        answers = []
        strict = recovery.stricter(self.options.sampling)
        for strategy in recovery.STRATEGIES[: self.options.retries]:
            try:
                answer = (self._fewer_crops(rendered, strict) if strategy == "fewer-crops"
                          else self._split_halves(rendered, strict))
            except Exception as e:  # noqa: BLE001 - a failed retry leaves the original answer standing
                logger.warning("page %d: retry %s failed: %s", rendered.index + 1, strategy, e)
                continue
            answers.append(answer)
            if answer.status == OK:
                break
        return answers

    def _fewer_crops(self, rendered: RenderedPage, sampling: SamplingParams) -> _Answer:
        view = self.options.view
        config = self.backend.processing_config(view)
        view = recovery.fewer_crops_view(view, num_crops(self.backend, rendered.image.size, view), config.min_crops)
        prepared = self.backend.prepare(rendered.image, self.options.prompt, view)
        output = _raise_if_error(self._generate([prepared], sampling)[0])
        return self._answer("fewer-crops", output, rendered.image.size)

    def _split_halves(self, rendered: RenderedPage, sampling: SamplingParams) -> _Answer:
        halves = recovery.split_halves(rendered.image)
        prepared = [self.backend.prepare(h.image, self.options.prompt, self.options.view) for h in halves]
        outputs = [_raise_if_error(o) for o in self._generate(prepared, sampling)]
        blocks: list[GroundingBlock] = []
        warnings: list[str] = []
        for half, output in zip(halves, outputs):
            parsed = parse_grounding(output.text, half.image.size)
            warnings += parsed.warnings
            for b in parsed.blocks:
                boxes = tuple((x1, y1 + half.top, x2, y2 + half.top) for x1, y1, x2, y2 in b.boxes)
                blocks.append(dataclasses.replace(b, index=len(blocks), boxes=boxes))
        joined = PageOutput(
            text="\n\n".join(o.text for o in outputs),
            finish_reason="stop" if all(o.finish_reason == "stop" for o in outputs) else "length",
            token_ids=outputs[0].token_ids + outputs[1].token_ids,
            prompt_tokens=sum(o.prompt_tokens for o in outputs), image_tokens=sum(o.image_tokens for o in outputs),
            timings={"generate": sum(o.timings.get("generate", 0.0) for o in outputs)},
        )
        statuses = [recovery.classify(o.finish_reason, o.token_ids, sampling.max_new_tokens) for o in outputs]
        status, reason = next((s for s in statuses if s[0] != OK), (OK, ""))
        return _Answer("split-halves", joined, tuple(blocks), tuple(warnings), status, reason)

    def _page(self, job: _Job, rendered: RenderedPage, answers: list[_Answer], timings: dict[str, float]) -> Page:
        winner = next((a for a in answers if a.status == OK), answers[0])
        width, height = rendered.image.size
        mapper = PointMapper(width, height, *rendered.size_pt) if rendered.size_pt else None
        page = Page(index=rendered.index, width=width, height=height, dpi=rendered.dpi,
                    width_pt=rendered.size_pt[0] if rendered.size_pt else None,
                    height_pt=rendered.size_pt[1] if rendered.size_pt else None,
                    status=winner.status, reason=winner.reason, raw=winner.output.text,
                    prompt_tokens=winner.output.prompt_tokens, image_tokens=winner.output.image_tokens,
                    generated_tokens=winner.output.generated_tokens,
                    attempts=[Attempt(strategy=a.strategy, status=a.status, reason=a.reason,
                                      generated_tokens=a.output.generated_tokens) for a in answers],
                    recovered_by=winner.strategy if winner is not answers[0] else None,
                    warnings=list(winner.warnings))
        page.blocks = make_blocks(winner.blocks, (width, height), mapper)
        if self.options.figures:
            n = 0
            for block in page.blocks:
                if block.label == FIGURE_LABEL:
                    block.figures = [figure_path(page, n + i) for i in range(len(block.boxes))]
                    n += len(block.boxes)
        page.markdown = page_markdown_from_blocks(page.blocks)
        page.timings = {**timings, **{k: v for k, v in winner.output.timings.items() if k != "tokens_per_second"}}
        return page

    def _page_done(self, job: _Job, page: Page, image: Image.Image | None = None) -> None:
        if job.out_dir is not None:
            if image is not None and self.options.figures:
                save_figures(page, image, job.out_dir)
            if image is not None and self.options.overlays:
                save_overlay(page, image, job.out_dir)
            # The resume record comes after the page's images: when it exists, they do.
            atomic_write(job.out_dir / PARTIAL_DIR / f"page-{page.number:04d}.json",
                         json.dumps(page.to_dict(), ensure_ascii=False))
        job.done[page.index] = page
        self.on_progress(Progress("page", job.doc, page=page))

    # --- documents ---

    def _finish(self, job: _Job) -> None:
        doc = job.doc
        doc.pages = [job.done[i] for i in job.todo]
        try:
            if job.out_dir is not None:
                self._write(job)
        except Exception as e:
            logger.debug("writing %s failed", doc.source, exc_info=True)
            doc.error = f"{doc.source}: cannot write the outputs: {type(e).__name__}: {e}"
        finally:
            _close(job)
        self.on_progress(Progress("finished", doc))

    def _write(self, job: _Job) -> None:
        doc, out, formats = job.doc, job.out_dir, self.options.formats
        if "md" in formats:
            atomic_write(out / f"{doc.name}.md", document_markdown(doc, page_separator=self.options.page_separator,
                                                                   math=self.options.math))
        if "html" in formats:
            atomic_write(out / f"{doc.name}.html", document_html(doc))
        if "pdf" in formats:
            from dsocr.pipeline.searchable_pdf import write_searchable_pdf

            pages = searchable_pages(doc, job.source, self.options.password)
            with PDFIUM_LOCK:
                atomic_write(out / f"{doc.name}.pdf", lambda tmp: write_searchable_pdf(tmp, pages))
        # The JSON is written last, always: it is what marks the document complete for the next run.
        atomic_write(out / f"{doc.name}.json", doc.to_json() + "\n")
        shutil.rmtree(out / PARTIAL_DIR, ignore_errors=True)


def searchable_pages(doc: Document, source: PdfSource | ImageSource | None, password: str | None) -> Iterator:
    """The pages of the searchable PDF: the original PDF pages, or the images, with the blocks' text."""
    from dsocr.pipeline.searchable_pdf import PdfPageInput, TextBlock

    for page in doc.pages:
        blocks = [TextBlock(text=plain_text(b), box=tuple(map(float, b.bbox)))
                  for b in page.blocks if b.bbox is not None and b.content and b.label != FIGURE_LABEL]
        if doc.kind == "pdf":
            yield PdfPageInput(blocks=blocks, pixel_size=(page.width, page.height), source_pdf=doc.source,
                               password=password, page_index=page.index)
        else:
            yield PdfPageInput(blocks=blocks, pixel_size=(page.width, page.height), dpi=page.dpi,
                               image=lambda index=page.index: _image_page(doc, index, source))


def _image_page(doc: Document, index: int, source: ImageSource | None) -> Image.Image:
    source = source if source is not None else open_source(doc.source)
    return source.render(index).image


def _failed_page(index: int, reason: str, rendered: RenderedPage | None = None) -> Page:
    page = Page(index=index, status=FAILED, reason=reason, attempts=[Attempt(strategy="original", status=FAILED,
                                                                             reason=reason, generated_tokens=0)])
    if rendered is not None:
        page.width, page.height, page.dpi = *rendered.image.size, rendered.dpi
        if rendered.size_pt:
            page.width_pt, page.height_pt = rendered.size_pt
    return page


def _raise_if_error(output: PageOutput | Exception) -> PageOutput:
    if isinstance(output, Exception):
        raise output
    return output


def _close(job: _Job) -> None:
    if job.source is not None:
        _close_source(job.source)
        job.source = None


def _close_source(source: PdfSource | ImageSource) -> None:
    try:
        source.close()
    except Exception:
        logger.debug("closing %s failed", source, exc_info=True)


def _drain(items: queue.Queue) -> None:
    while True:
        try:
            items.get_nowait()
        except queue.Empty:
            return

"""`dsocr serve`: the HTTP application (FastAPI) around one engine and one job runner.

Must not contain model logic. Routes:
    GET  /health /ready /metrics                 liveness, readiness, Prometheus
    GET  /v1/models   POST /v1/chat/completions  OpenAI-compatible (streaming as SSE)
    POST /v1/ocr                                 Mistral/LiteLLM OCR shape, one document inline
    POST/GET /v1/documents, GET/DELETE /v1/documents/{id}, .../events (SSE), .../result, .../pages/{n}/image
    GET  /  and /static/*                        the web page
Every error is OpenAI's `{"error": {...}}`; API keys (Bearer) guard everything but /health and the page's
static files (which hold no data).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import html
import io
import json
import logging
import re
import secrets
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from dsocr.errors import DsocrError
from dsocr.pipeline.pipeline import Converter
from dsocr.pipeline.sources import RenderSettings, open_source, parse_page_ranges, select_pages
from dsocr.server import openai_api
from dsocr.server.engine import Engine, QueueFull
from dsocr.server.jobs import DONE, FAILED, EngineBackend, JobOptions, JobRunner, JobStore, public_job
from dsocr.server.metrics import Metrics
from dsocr.server.openai_api import ApiError

logger = logging.getLogger("dsocr.server")
STATIC = Path(__file__).with_name("static")
ENDED = (DONE, FAILED, "cancelled")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    data_dir: Path
    api_keys: tuple[str, ...] = ()
    max_upload_bytes: int = 50 * 2**20
    max_pages: int = 500
    max_image_pixels: int = 178_000_000
    max_tokens: int = 8192  # default and ceiling of a request's max_tokens
    request_timeout: float = 600.0  # seconds a synchronous request may take
    allowed_image_hosts: tuple[str, ...] = ()  # remote image URLs: refused unless the host is listed
    retry_after: int = 2  # seconds, on 429


@dataclass
class _State:
    engine: Engine
    store: JobStore
    runner: JobRunner
    settings: ServerSettings
    metrics: Metrics
    started: float = field(default_factory=time.time)


def create_app(engine: Engine, settings: ServerSettings) -> FastAPI:
    store = JobStore(settings.data_dir)
    metrics = Metrics(engine, store)
    runner = JobRunner(store, engine, max_image_pixels=settings.max_image_pixels,
                       on_page=lambda _job, page: metrics.page_done(page))
    state = _State(engine, store, runner, settings, metrics)
    app = FastAPI(title="dsocr", docs_url=None, redoc_url=None)
    app.state.dsocr = state

    @app.on_event("startup")
    async def _start() -> None:
        runner.start()

    @app.on_event("shutdown")
    async def _stop() -> None:
        runner.stop()

    _install_handlers(app, state)
    _routes(app, state)
    if STATIC.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# --- errors, auth, logs -----------------------------------------------------------------------------

def _install_handlers(app: FastAPI, state: _State) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return JSONResponse(ApiError(error.status_code, str(error.detail), type=kind).body(),
                            status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse(ApiError(400, f"invalid request: {error.errors()[:3]}").body(), status_code=400)

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Response:
        start = time.perf_counter()
        request_id = "req_" + secrets.token_hex(8)
        path = request.url.path
        if state.settings.api_keys and not _public(path) and not _authorised(request, state.settings.api_keys):
            response: Response = JSONResponse(ApiError(401, "missing or invalid API key (Authorization: Bearer "
                                                       "KEY)", type="authentication_error",
                                                       code="invalid_api_key").body(), status_code=401)
        else:
            try:
                response = await call_next(request)
            except Exception:
                logger.exception("unhandled error on %s", path)
                response = JSONResponse(ApiError(500, "internal error", type="server_error").body(),
                                        status_code=500)
        seconds = time.perf_counter() - start
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "other")
        state.metrics.request(endpoint, response.status_code, seconds)
        response.headers["x-request-id"] = request_id
        logger.info(json.dumps({"event": "request", "id": request_id, "method": request.method, "path": path,
                                "status": response.status_code, "ms": round(seconds * 1000, 1)}))
        return response


def _public(path: str) -> bool:
    return path in ("/health", "/", "/favicon.ico") or path.startswith("/static/")


def _authorised(request: Request, keys: tuple[str, ...]) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and any(secrets.compare_digest(token.strip(), k) for k in keys)


# --- routes -------------------------------------------------------------------------------------------

def _routes(app: FastAPI, state: _State) -> None:
    engine, store, settings = state.engine, state.store, state.settings

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        checks = {"model": engine.name, "storage": _writable(settings.data_dir)}
        ok = bool(checks["storage"])
        return JSONResponse({"status": "ready" if ok else "not ready", **checks}, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/")
    async def index() -> Response:
        page = STATIC / "index.html"
        if not page.is_file():
            return JSONResponse(ApiError(404, "the web page is not installed").body(), status_code=404)
        return FileResponse(page, media_type="text/html")

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": int(state.started),
                                            "owned_by": "dsocr"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await _json_body(request, settings.max_upload_bytes * 4 // 3 + 65536)
        chat_request = openai_api.parse_chat(
            body, default_max_tokens=settings.max_tokens, token_string=engine.ocr.tokenizer.id_to_token,
            fetch_remote=lambda url: _fetch_remote(url, settings))
        _check_max_tokens(chat_request.sampling.max_new_tokens, settings)
        prepared = await run_in_threadpool(_prepare, engine, chat_request.image, chat_request.prompt, settings)
        strip = _special_stripper(engine) if chat_request.skip_special_tokens else (lambda text: text)
        request_id = "chatcmpl-" + secrets.token_hex(12)
        model = chat_request.model or engine.name
        if chat_request.stream:
            return _stream_chat(engine, prepared, chat_request, request_id, model, strip, settings)
        future = _submit(engine, prepared, chat_request.sampling, settings)
        result = await _wait(future, settings.request_timeout)
        return JSONResponse(openai_api.completion(
            request_id, model, strip(result.text), _finish(result),
            openai_api.usage(result.prompt_tokens, len(result.token_ids))))

    @app.post("/v1/ocr")
    async def ocr(request: Request) -> JSONResponse:
        body = await _json_body(request, settings.max_upload_bytes * 4 // 3 + 65536)
        return JSONResponse(await run_in_threadpool(_ocr_document, state, body))

    @app.post("/v1/documents", status_code=202)
    async def create_document(request: Request) -> JSONResponse:
        form = await request.form(max_files=1, max_fields=16)
        upload = form.get("file")
        if upload is None or not hasattr(upload, "read"):
            raise ApiError(400, "file: a multipart file field named 'file' is required", param="file")
        data = await upload.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise ApiError(413, f"file: larger than the limit of {settings.max_upload_bytes} bytes", param="file",
                           code="upload_too_large")
        options = _job_options(form, settings)
        _check_prompt(engine, options.prompt)
        webhook = form.get("webhook") or None
        if webhook is not None and not str(webhook).startswith(("http://", "https://")):
            raise ApiError(400, "webhook: an http(s) URL is required", param="webhook")
        await run_in_threadpool(_check_document, data, options, settings)
        name = Path(str(getattr(upload, "filename", "") or "upload")).name[:200]  # metadata only, never a path
        job, created = await run_in_threadpool(store.create, data, name, options, webhook)
        if created:
            state.runner.wake()
        return JSONResponse(public_job(job), status_code=202 if created else 200)

    @app.get("/v1/documents")
    async def list_documents(limit: int = 20, after: str | None = None) -> dict:
        if not 1 <= limit <= 100:
            raise ApiError(400, "limit: must be 1..100", param="limit")
        jobs, more = await run_in_threadpool(store.list, limit, after)
        return {"object": "list", "data": [public_job(j) for j in jobs], "has_more": more}

    @app.get("/v1/documents/{job_id}")
    async def get_document(job_id: str) -> dict:
        return public_job(_job_or_404(store, job_id))

    @app.delete("/v1/documents/{job_id}")
    async def delete_document(job_id: str) -> dict:
        _job_or_404(store, job_id)
        state.runner.cancel(job_id)
        await run_in_threadpool(store.delete, job_id)
        return {"id": job_id, "object": "document", "deleted": True}

    @app.get("/v1/documents/{job_id}/events")
    async def document_events(job_id: str) -> StreamingResponse:
        _job_or_404(store, job_id)
        return StreamingResponse(_job_events(store, job_id), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    @app.get("/v1/documents/{job_id}/result")
    async def document_result(job_id: str, format: str = "md") -> Response:
        job = _job_or_404(store, job_id)
        if job["status"] != DONE:
            raise ApiError(409, f"the job is {job['status']}; results exist once it is done", code="not_ready")
        folder = store.output(job_id)
        if format == "zip":
            return Response(await run_in_threadpool(_zip, folder), media_type="application/zip",
                            headers={"Content-Disposition": f'attachment; filename="{job_id}.zip"'})
        media = {"md": "text/markdown; charset=utf-8", "json": "application/json", "html": "text/html; charset=utf-8"}
        if format not in media:
            raise ApiError(400, "format: one of md, json, html, zip", param="format")
        body = await run_in_threadpool((folder / f"input.{format}").read_text, "utf-8")
        stem = _safe_stem(job["filename"])
        if format == "json":  # the client's names, not the server's paths
            document = json.loads(body)
            document["source"], document["name"] = job["filename"], stem
            body = json.dumps(document, ensure_ascii=False, indent=1)
        elif format == "html":
            body = body.replace("<title>input</title>", f"<title>{html.escape(job['filename'])}</title>", 1)
        return Response(body, media_type=media[format],
                        headers={"Content-Disposition": f'inline; filename="{stem}.{format}"'})

    @app.get("/v1/documents/{job_id}/images/{name}")
    async def figure_image(job_id: str, name: str) -> FileResponse:
        """Figure crops, where the html result's relative links point."""
        _job_or_404(store, job_id)
        path = store.output(job_id) / "images" / name
        if not _FIGURE_NAME.fullmatch(name) or not path.is_file():
            raise ApiError(404, f"no figure {name!r}", type="not_found_error")
        return FileResponse(path, media_type="image/jpeg")

    @app.get("/v1/documents/{job_id}/pages/{number}/image")
    async def page_image(job_id: str, number: int) -> FileResponse:
        _job_or_404(store, job_id)
        path = store.output(job_id) / "pages" / f"page-{number:04d}.jpg"
        if number < 1 or not path.is_file():
            raise ApiError(404, f"page {number} has no image (yet)", type="not_found_error")
        return FileResponse(path, media_type="image/jpeg")


# --- helpers ------------------------------------------------------------------------------------------

async def _json_body(request: Request, limit: int) -> dict:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise ApiError(413, f"request body larger than {limit} bytes", code="request_too_large")
    raw = await request.body()
    if len(raw) > limit:
        raise ApiError(413, f"request body larger than {limit} bytes", code="request_too_large")
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _prepare(engine: Engine, image: bytes, prompt: str | None, settings: ServerSettings) -> Any:
    try:
        prepared = engine.ocr.prepare(image, prompt)
    except DsocrError as e:
        raise ApiError(400, f"image: {e}", param="messages") from None
    width, height = prepared.image_size
    if width * height > settings.max_image_pixels:
        raise ApiError(400, f"image: {width}x{height} is more than {settings.max_image_pixels} pixels")
    return prepared


def _submit(engine: Engine, prepared: Any, sampling: Any, settings: ServerSettings, **kwargs: Any) -> Any:
    try:
        return engine.submit(prepared, sampling, **kwargs)
    except QueueFull as e:
        raise ApiError(429, f"the server is busy: {e}; retry later", type="rate_limit_error",
                       code="queue_full", headers={"Retry-After": str(settings.retry_after)}) from None
    except DsocrError as e:
        raise ApiError(400, str(e)) from None


async def _wait(future: Any, timeout: float) -> Any:
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    except asyncio.TimeoutError:
        future.cancel()
        raise ApiError(504, f"the request took longer than {timeout:g} s", type="timeout_error") from None
    except DsocrError as e:
        raise ApiError(400, str(e)) from None


def _finish(result: Any) -> str:
    return "stop" if result.finish_reason == "stop" else "length"


def _check_max_tokens(max_tokens: int, settings: ServerSettings) -> None:
    if max_tokens > settings.max_tokens:
        raise ApiError(400, f"max_tokens: at most {settings.max_tokens} on this server", param="max_tokens")


def _special_stripper(engine: Engine) -> Any:
    specials = engine.ocr.tokenizer.special_tokens()

    def strip(text: str) -> str:
        for token in specials:
            text = text.replace(token, "")
        return text
    return strip


def _stream_chat(engine: Engine, prepared: Any, chat: Any, request_id: str, model: str, strip: Any,
                 settings: ServerSettings) -> StreamingResponse:
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue[str | None] = asyncio.Queue()
    future = _submit(engine, prepared, chat.sampling, settings,
                     on_text=lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece))
    future.add_done_callback(lambda _f: loop.call_soon_threadsafe(pieces.put_nowait, None))
    created = int(time.time())

    async def events() -> Any:
        yield openai_api.chunk(request_id, model, created, {"role": "assistant", "content": ""})
        deadline = loop.time() + settings.request_timeout
        while (piece := await asyncio.wait_for(pieces.get(), max(0.0, deadline - loop.time()))) is not None:
            if text := strip(piece):
                yield openai_api.chunk(request_id, model, created, {"content": text})
        try:
            result = future.result()
        except Exception as e:  # noqa: BLE001 - the stream has started: the error goes in the stream
            yield f"data: {json.dumps(ApiError(500, str(e), type='server_error').body())}\n\n"
            return
        yield openai_api.chunk(request_id, model, created, {}, finish_reason=_finish(result))
        if chat.include_usage:
            yield openai_api.chunk(request_id, model, created, {}, usage=openai_api.usage(
                result.prompt_tokens, len(result.token_ids)))
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _fetch_remote(url: str, settings: ServerSettings) -> bytes:
    from urllib.parse import urlparse
    from urllib.request import urlopen

    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or parsed.hostname not in settings.allowed_image_hosts:
        raise ApiError(400, "image_url: remote URLs are refused on this server (send a data: URI, or start it "
                            "with --allow-image-host HOST)", param="messages", code="remote_url_refused")
    with urlopen(url, timeout=30) as response:
        data = response.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise ApiError(413, "image_url: the remote image is too large")
    return data


_FIGURE_NAME = re.compile(r"page-[0-9]{4,}-[0-9]+\.jpg")


def _safe_stem(filename: str) -> str:
    """A download name from the uploaded one: letters, digits, '.', '-', '_' only."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename).stem).strip("._") or "document"
    return stem[:100]


def _writable(folder: Path) -> bool:
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ready-"):
            return True
    except OSError:
        return False


def _job_or_404(store: JobStore, job_id: str) -> dict:
    job = store.get(job_id)
    if job is None:
        raise ApiError(404, f"no document job {job_id!r}", type="not_found_error", code="not_found")
    return job


def _job_options(form: Any, settings: ServerSettings) -> JobOptions:
    def number(name: str, kind: type, default: Any) -> Any:
        value = form.get(name)
        if value in (None, ""):
            return default
        try:
            return kind(value)
        except ValueError:
            raise ApiError(400, f"{name}: not a number: {value!r}", param=name) from None

    options = JobOptions(pages=form.get("pages") or None, prompt=form.get("prompt") or None,
                         max_tokens=number("max_tokens", int, settings.max_tokens), dpi=number("dpi", float, 144.0),
                         password=form.get("password") or None)
    _check_max_tokens(options.max_tokens, settings)
    try:
        options.convert_options(1, settings.max_image_pixels)  # validates pages, prompt, dpi, max_tokens
    except DsocrError as e:
        raise ApiError(400, str(e)) from None
    return options


def _check_prompt(engine: Any, prompt: str | None) -> None:
    """Refuse at upload a prompt the served model cannot answer (a model that reads lines answers the document
    prompts only), rather than failing every page of the job."""
    check = getattr(getattr(engine, "ocr", None), "check_prompt", None)
    if check is None:
        return
    try:
        check(prompt)
    except DsocrError as e:
        raise ApiError(400, str(e), param="prompt") from None


def _check_document(data: bytes, options: JobOptions, settings: ServerSettings) -> None:
    """Refuse at upload what would only fail later: unreadable files, wrong passwords, too many pages."""
    with tempfile.NamedTemporaryFile(suffix=".upload") as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            source = open_source(tmp.name, password=options.password,
                                 render=RenderSettings(max_image_pixels=settings.max_image_pixels))
        except DsocrError as e:
            raise ApiError(400, f"file: {str(e).replace(tmp.name, 'the upload')}", param="file") from None
        try:
            selected = len(select_pages(parse_page_ranges(options.pages), source.num_pages))
        except DsocrError as e:
            raise ApiError(400, str(e), param="pages") from None
        finally:
            source.close()
    if selected > settings.max_pages:
        raise ApiError(413, f"file: {selected} pages selected, more than the limit of {settings.max_pages}",
                       param="file", code="too_many_pages")


async def _job_events(store: JobStore, job_id: str) -> Any:
    last = None
    while True:
        job = await run_in_threadpool(store.get, job_id)
        if job is None:
            yield "event: deleted\ndata: {}\n\n"
            return
        public = public_job(job)
        state = (public["status"], public["pages_done"], public["pages_total"])
        if state != last:
            last = state
            kind = "done" if public["status"] in ENDED else "progress"
            yield f"event: {kind}\ndata: {json.dumps(public)}\n\n"
            if kind == "done":
                return
        await asyncio.sleep(0.25)


def _zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and ".partial" not in path.parts:
                archive.write(path, path.relative_to(folder).as_posix().replace("input.", "document.", 1))
    return buffer.getvalue()


def _ocr_document(state: _State, body: dict) -> dict:
    """/v1/ocr: the Mistral OCR request shape, answered synchronously through the pipeline."""
    settings = state.settings
    document = body.get("document")
    if not isinstance(document, dict):
        raise ApiError(400, "document: an object with type document_url or image_url is required", param="document")
    kind = document.get("type")
    url = document.get("document_url") if kind == "document_url" else document.get("image_url")
    url = url.get("url") if isinstance(url, dict) else url
    if kind not in ("document_url", "image_url") or not isinstance(url, str):
        raise ApiError(400, "document: type document_url or image_url with a URL is required", param="document")
    data = openai_api.decode_data_uri(url, what="document") if url.startswith("data:") else _fetch_remote(url,
                                                                                                         settings)
    if len(data) > settings.max_upload_bytes:
        raise ApiError(413, "document: larger than the upload limit", code="upload_too_large")
    pages = body.get("pages")
    if pages is not None and (not isinstance(pages, list) or not all(isinstance(p, int) and p >= 0 for p in pages)):
        raise ApiError(400, "pages: a list of 0-based page indices", param="pages")
    spec = ",".join(str(p + 1) for p in pages) if pages else None
    max_tokens = body.get("max_tokens") or settings.max_tokens
    _check_max_tokens(max_tokens, settings)
    options = JobOptions(pages=spec, prompt=body.get("prompt"), max_tokens=max_tokens)
    _check_prompt(state.engine, options.prompt)
    _check_document(data, options, settings)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "document"
        path.write_bytes(data)
        convert = dataclasses.replace(options.convert_options(4, settings.max_image_pixels), formats=("json",),
                                      overlays=False)
        doc = Converter(EngineBackend(state.engine), convert).convert(path)
        if doc.error is not None:
            raise ApiError(400, f"document: {doc.error.replace(str(path), 'the document')}")
        images = _figure_images(path, doc) if body.get("include_image_base64") else {}
    for page in doc.pages:
        state.metrics.page_done(page)
    return {
        "model": body.get("model") or state.engine.name,
        "pages": [_ocr_page(page, images.get(page.index, {})) for page in doc.pages],
        "usage_info": {"pages_processed": len(doc.pages), "doc_size_bytes": len(data)},
    }


def _ocr_page(page: Any, images: dict[str, str]) -> dict:
    figures = []
    for block in page.blocks:
        for box, rel in zip(block.boxes, block.figures):
            name = Path(rel).name
            figure = {"id": name, "top_left_x": box[0], "top_left_y": box[1], "bottom_right_x": box[2],
                      "bottom_right_y": box[3], "image_base64": images.get(rel)}
            figures.append(figure)
    return {"index": page.index, "markdown": page.markdown, "images": figures,
            "dimensions": {"dpi": round(page.dpi), "height": page.height, "width": page.width},
            "status": page.status, "reason": page.reason, "blocks": [b.to_dict() for b in page.blocks]}


def _figure_images(path: Path, doc: Any) -> dict[int, dict[str, str]]:
    """Figure crops as data URIs, re-rendering only the pages that have figures."""
    out: dict[int, dict[str, str]] = {}
    source = open_source(path, password=None, render=RenderSettings())
    try:
        for page in doc.pages:
            boxes = [(box, rel) for b in page.blocks for box, rel in zip(b.boxes, b.figures)]
            if not boxes:
                continue
            image = source.render(page.index).image
            for box, rel in boxes:
                buffer = io.BytesIO()
                image.crop(box).save(buffer, format="JPEG", quality=92)
                out.setdefault(page.index, {})[rel] = "data:image/jpeg;base64," + base64.b64encode(
                    buffer.getvalue()).decode()
    finally:
        source.close()
    return out

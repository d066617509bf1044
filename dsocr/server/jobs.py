"""Document jobs: persisted in SQLite (WAL) plus files under the data directory, run one after another.

Must not know about HTTP. A job is accepted (`queued`), taken by the runner thread (`running`), and ends
`done`, `failed` or `cancelled`. Its pages go through the document pipeline with the server's engine as
backend and `<data>/jobs/<id>/out` as output folder, so the pipeline's resume records make a job that was
running when the server died (even by SIGKILL) continue at its first missing page after a restart: every
accepted job finishes, and no page is processed twice into its result.

Uploaded file names are metadata only; the input is stored as `<data>/jobs/<id>/input`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import shutil
import sqlite3
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dsocr.generation.params import SamplingParams
from dsocr.pipeline.backend import ModelBackend, PageOutput, page_output
from dsocr.pipeline.pipeline import Converter, ConvertOptions, Progress
from dsocr.pipeline.sources import RenderSettings
from dsocr.server.engine import Engine, QueueFull

logger = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
OUTPUT_NAME = "input"  # the pipeline names outputs after the input file: out/input/input.md, ...
JOB_RESERVE = 2  # engine queue slots a job leaves free for interactive requests

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    options TEXT NOT NULL,
    dedup_key TEXT NOT NULL,
    status TEXT NOT NULL,
    pages_done INTEGER NOT NULL DEFAULT 0,
    pages_total INTEGER,
    status_counts TEXT,
    error TEXT,
    webhook TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_dedup ON jobs (dedup_key);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobOptions:
    """What a job asks for (the subset of `dsocr convert` options a client may set)."""

    pages: str | None = None
    prompt: str | None = None
    max_tokens: int = 8192
    dpi: float = 144.0
    password: str | None = None

    def convert_options(self, batch_size: int, max_image_pixels: int) -> ConvertOptions:
        return ConvertOptions(prompt=self.prompt, sampling=SamplingParams(max_new_tokens=self.max_tokens),
                              render=RenderSettings(dpi=self.dpi, max_image_pixels=max_image_pixels),
                              pages=self.pages, password=self.password, batch_size=batch_size,
                              formats=("md", "json", "html"))

    def key(self) -> str:
        return json.dumps({k: getattr(self, k) for k in ("pages", "prompt", "max_tokens", "dpi", "password")},
                          sort_keys=True)


class JobStore:
    """The jobs table. One connection per call: SQLite in WAL mode lets readers and the writer overlap."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        (data_dir / "jobs").mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "jobs.sqlite3"
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)  # autocommit: each statement commits
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA synchronous=NORMAL")
            yield db
        finally:
            db.close()

    def job_dir(self, job_id: str) -> Path:
        return self.data_dir / "jobs" / job_id

    def create(self, data: bytes, filename: str, options: JobOptions, webhook: str | None) -> tuple[dict, bool]:
        """A new queued job for `data`, or the existing one for the same content and options (False)."""
        sha = hashlib.sha256(data).hexdigest()
        dedup = hashlib.sha256(f"{sha}\n{options.key()}".encode()).hexdigest()
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # two identical uploads at once still make one job
            row = db.execute("SELECT * FROM jobs WHERE dedup_key = ? AND status != ? ORDER BY created_at DESC",
                             (dedup, CANCELLED)).fetchone()
            if row is not None and row["status"] != FAILED:
                db.execute("COMMIT")
                return _job(row), False
            job_id = "doc_" + secrets.token_hex(12)
            folder = self.job_dir(job_id)
            folder.mkdir(parents=True)
            tmp = folder / "input.part"
            tmp.write_bytes(data)
            tmp.replace(folder / "input")  # the row below only ever points at a complete input
            now = time.time()
            db.execute("INSERT INTO jobs (id, filename, sha256, options, dedup_key, status, webhook, created_at, "
                       "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (job_id, filename, sha, options.key(), dedup, QUEUED, webhook, now, now))
            db.execute("COMMIT")
            return self.get(job_id, db), True

    def get(self, job_id: str, db: sqlite3.Connection | None = None) -> dict | None:
        if db is None:
            with self._connect() as connection:
                return self.get(job_id, connection)
        row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job(row)

    def list(self, limit: int, after: str | None = None) -> tuple[list[dict], bool]:
        """Newest first; `after` is the id of the last job of the previous page."""
        with self._connect() as db:
            if after is not None:
                anchor = db.execute("SELECT created_at, id FROM jobs WHERE id = ?", (after,)).fetchone()
                if anchor is None:
                    return [], False
                rows = db.execute("SELECT * FROM jobs WHERE (created_at, id) < (?, ?) ORDER BY created_at DESC, "
                                  "id DESC LIMIT ?", (anchor["created_at"], anchor["id"], limit + 1)).fetchall()
            else:
                rows = db.execute("SELECT * FROM jobs ORDER BY created_at DESC, id DESC LIMIT ?",
                                  (limit + 1,)).fetchall()
        return [_job(r) for r in rows[:limit]], len(rows) > limit

    def update(self, job_id: str, **fields: Any) -> None:
        if "status_counts" in fields:
            fields["status_counts"] = json.dumps(fields["status_counts"])
        fields["updated_at"] = time.time()
        columns = ", ".join(f"{name} = ?" for name in fields)
        with self._connect() as db:
            db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*fields.values(), job_id))

    def next_job(self) -> dict | None:
        """The oldest job that is running (interrupted by a restart) or queued."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM jobs WHERE status IN (?, ?) ORDER BY status = ? DESC, created_at "
                             "LIMIT 1", (RUNNING, QUEUED, RUNNING)).fetchone()
        return None if row is None else _job(row)

    def delete(self, job_id: str) -> bool:
        with self._connect() as db:
            deleted = db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
        return deleted

    def counts(self) -> dict[str, int]:
        with self._connect() as db:
            return {r["status"]: r["n"] for r in db.execute("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")}

    def options(self, job: dict) -> JobOptions:
        return JobOptions(**json.loads(job["options_json"]))

    def output(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "out" / OUTPUT_NAME


def _job(row: sqlite3.Row) -> dict:
    job = dict(row)
    job["options_json"] = job.pop("options")
    job["status_counts"] = json.loads(job["status_counts"]) if job["status_counts"] else None
    job.pop("dedup_key")
    return job


class EngineBackend(ModelBackend):
    """The pipeline's backend inside the server: pages go through the shared engine, batched with the
    requests of other clients."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine.ocr)
        self.engine = engine

    def generate(self, prepared: list, sampling: SamplingParams) -> list[PageOutput]:
        futures = [self._submit(p, sampling) for p in prepared]
        return [page_output(f.result()) for f in futures]

    def _submit(self, prepared: Any, sampling: SamplingParams) -> Any:
        while True:  # a job waits for room rather than failing; interactive requests get the 429s
            try:
                return self.engine.submit(prepared, sampling, reserve=JOB_RESERVE)
            except QueueFull:
                time.sleep(0.05)


class _Cancelled(Exception):
    pass


class JobRunner:
    """Runs jobs one at a time on its own thread; `on_page(job_id, page)` is told about every page done."""

    def __init__(self, store: JobStore, engine: Engine, *, batch_size: int = 4,
                 max_image_pixels: int, on_page: Callable[[str, Any], None] | None = None) -> None:
        self.store, self.engine = store, engine
        self.batch_size, self.max_image_pixels = batch_size, max_image_pixels
        self.on_page = on_page or (lambda _job, _page: None)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cancelled: set[str] = set()
        self._thread = threading.Thread(target=self._loop, name="dsocr-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        self._cancelled.add(job_id)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            job = self.store.next_job()
            if job is None:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            try:
                self._run(job)
            except _Cancelled:
                logger.info("job %s cancelled", job["id"])
            except Exception as e:
                logger.exception("job %s failed", job["id"])
                self.store.update(job["id"], status=FAILED, error=f"{type(e).__name__}: {e}")
                self._notify(job["id"])

    def _run(self, job: dict) -> None:
        job_id = job["id"]
        self.store.update(job_id, status=RUNNING)
        options = self.store.options(job).convert_options(self.batch_size, self.max_image_pixels)
        converter = Converter(EngineBackend(self.engine), options)
        done = 0

        def progress(event: Progress) -> None:
            nonlocal done
            if job_id in self._cancelled or self._stop.is_set():
                raise _Cancelled
            if event.kind == "document":
                done = event.resumed
                self.store.update(job_id, pages_total=event.pages + event.resumed, pages_done=done)
            elif event.kind == "page":
                done += 1
                self.store.update(job_id, pages_done=done)
                self.on_page(job_id, event.page)

        input_path = self.store.job_dir(job_id) / "input"
        (doc,) = converter.convert_many([input_path], output_dir=self.store.job_dir(job_id) / "out",
                                        on_progress=progress)
        if doc.error is not None:
            self.store.update(job_id, status=FAILED, error=doc.error.replace(str(input_path), job["filename"]))
        else:
            self.store.update(job_id, status=DONE, pages_done=len(doc.pages), pages_total=len(doc.pages),
                              status_counts=doc.status_counts())
        self._notify(job_id)

    def _notify(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job and job.get("webhook"):
            threading.Thread(target=_post_webhook, args=(job["webhook"], public_job(job)), daemon=True).start()


def _post_webhook(url: str, payload: dict) -> None:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "dsocr"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
    except OSError as e:
        logger.warning("webhook %s failed: %s", url, e)


def public_job(job: dict, base_url: str = "") -> dict:
    """The job as clients see it."""
    job_id = job["id"]
    return {
        "id": job_id, "object": "document", "filename": job["filename"], "status": job["status"],
        "pages_done": job["pages_done"], "pages_total": job["pages_total"], "error": job["error"],
        "status_counts": job["status_counts"], "created_at": int(job["created_at"]),
        "updated_at": int(job["updated_at"]), "status_url": f"{base_url}/v1/documents/{job_id}",
        "result_url": f"{base_url}/v1/documents/{job_id}/result", "events_url": f"{base_url}/v1/documents/{job_id}/events",
    }

"""`dsocr serve --engine fast`: the continuous-batching engine behind the same API. Concurrent requests join a
running batch of 3 rows, and every answer equals the reference engine's for the same request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from server_helpers import Server, image_message, pdf_bytes, png_bytes, start_server

from dsocr.api import OCR
from dsocr.engine.engine import EngineConfig
from dsocr.generation.params import SamplingParams
from dsocr.server.engine import Engine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fast_server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tiny_checkpoint, tmp_path_factory.mktemp("serve-fast") / "data", "--engine", "fast",
                           "--max-batch", "3")
    yield running
    running.stop()


def _ask(url: str, i: int) -> tuple[str, str]:
    with openai.OpenAI(api_key="EMPTY", base_url=url + "/v1", timeout=300, max_retries=0) as client:
        r = client.chat.completions.create(
            model="m", messages=image_message("<image>\nFree OCR.", png_bytes(f"page {i}", (200 + 60 * i, 300))),
            max_tokens=10 + 7 * i, extra_body={"skip_special_tokens": False})
    return r.choices[0].message.content, r.choices[0].finish_reason


def test_concurrent_requests_equal_the_reference_engine(fast_server: Server, server: Server) -> None:
    with ThreadPoolExecutor(8) as pool:
        fast = list(pool.map(lambda i: _ask(fast_server.url, i), range(8)))
    reference = [_ask(server.url, i) for i in range(8)]
    assert fast == reference
    metrics = httpx.get(fast_server.url + "/metrics").text
    assert "dsocr_engine_requests_total 8.0" in metrics or "dsocr_engine_requests 8.0" in metrics


def test_streaming_and_document_jobs_run_on_the_fast_engine(fast_server: Server) -> None:
    with openai.OpenAI(api_key="EMPTY", base_url=fast_server.url + "/v1", timeout=300, max_retries=0) as client:
        kwargs = {"model": "m", "messages": image_message(), "max_tokens": 30,
                  "extra_body": {"skip_special_tokens": False}}
        whole = client.chat.completions.create(**kwargs).choices[0].message.content
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            **kwargs, stream=True) if c.choices)
    assert streamed == whole
    job = httpx.post(fast_server.url + "/v1/documents", files={"file": ("three.pdf", pdf_bytes(3), "application/pdf")},
                     data={"max_tokens": "20"}).json()
    deadline = time.monotonic() + 120
    while (state := httpx.get(f"{fast_server.url}/v1/documents/{job['id']}").json())["status"] not in ("done", "failed"):
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    assert state["status"] == "done" and state["pages_done"] == 3


def test_cancelling_a_running_request_frees_its_row(tiny_checkpoint: Path) -> None:
    """One row: a long request is cancelled mid-way (what a timeout or a client gone does); the engine aborts it
    and the next request runs at once instead of after ~1700 tokens."""
    ocr = OCR.from_pretrained(tiny_checkpoint, device="cpu", engine="fast", engine_config=EngineConfig(max_batch=1))
    engine = Engine(ocr, max_batch=1)
    try:
        prepared = ocr.prepare(png_bytes("long"), "free")
        long = engine.submit(prepared, SamplingParams(max_new_tokens=4000, ignore_eos=True, stop_on_loop=False))
        deadline = time.monotonic() + 60
        while ocr.engine.stats.generated_tokens < 20:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert long.cancel()
        short = engine.submit(ocr.prepare(png_bytes("short"), "free"), SamplingParams(max_new_tokens=5,
                                                                                    ignore_eos=True))
        assert len(short.result(timeout=60).token_ids) == 5
        assert ocr.engine.stats.generated_tokens < 600  # the long one stopped where it was cancelled
    finally:
        engine.stop()

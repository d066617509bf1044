"""`dsocr serve` with a model that reads lines (the embedded model's kind): document jobs and /v1/ocr read whole
pages through the line reader, and a prompt such a model cannot answer is refused at once, not page by page."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from server_helpers import Server, data_uri, pdf_bytes, start_server

from dsocr.testing.fixtures import tiny_config, write_random_checkpoint

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lines_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = replace(tiny_config(), reading="lines", base_size=384)
    model = write_random_checkpoint(tmp_path_factory.mktemp("lines") / "model", config, seed=0)
    running = start_server(model, tmp_path_factory.mktemp("serve-lines") / "data", "--max-tokens", "64")
    yield running
    running.stop()


def _upload(server: Server, **fields: str) -> httpx.Response:
    return httpx.post(server.url + "/v1/documents", files={"file": ("memo.pdf", pdf_bytes(1), "application/pdf")},
                      data=fields, timeout=60)


def test_a_prompt_a_lines_model_cannot_answer_is_refused_at_upload(lines_server: Server) -> None:
    refused = _upload(lines_server, prompt="describe")
    assert refused.status_code == 400, refused.text
    assert "reads the text lines of documents only" in refused.json()["error"]["message"]
    ocr = httpx.post(lines_server.url + "/v1/ocr", timeout=60, json={
        "document": {"type": "document_url", "document_url": data_uri(pdf_bytes(1), "application/pdf")},
        "prompt": "describe"})
    assert ocr.status_code == 400 and "documents only" in ocr.json()["error"]["message"]
    assert httpx.get(lines_server.url + "/v1/documents").json()["data"] == []  # no job was made


def test_a_document_job_is_read_line_by_line(lines_server: Server) -> None:
    created = _upload(lines_server)
    assert created.status_code == 202, created.text
    job_id, deadline = created.json()["id"], time.monotonic() + 300
    while (job := httpx.get(f"{lines_server.url}/v1/documents/{job_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert job["status"] == "done" and job["pages_done"] == 1, job
    document = httpx.get(f"{lines_server.url}/v1/documents/{job_id}/result?format=json").json()
    blocks = document["pages"][0]["blocks"]
    assert [b["label"] for b in blocks] == ["text"]  # the page's one line "Page 1", found by the layout step

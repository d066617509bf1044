"""`dsocr serve` on loopback with the tiny random checkpoint: the official openai client, /v1/ocr, document
jobs, errors. Restarts, overload and limits are in test_server_lifecycle.py."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
from server_helpers import data_uri, image_message, pdf_bytes, png_bytes

from dsocr.pipeline.document import json_schema
from dsocr.processing.tokenizer import Tokenizer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="EMPTY", base_url=server.url + "/v1", timeout=300, max_retries=0) as c:
        yield c


def test_models_and_health(server, client) -> None:
    assert [m.id for m in client.models.list().data] == [server.args[server.args.index("--model") + 1]]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/ready")
    assert ready.status_code == 200 and ready.json()["storage"] is True


def test_the_seed_request_body_works_unchanged(client, tiny_checkpoint: Path) -> None:
    tokenizer = Tokenizer.from_file(tiny_checkpoint / "tokenizer.json")
    td, td_close = tokenizer.token_id("<td>"), tokenizer.token_id("</td>")  # 128821, 128822 officially
    response = client.chat.completions.create(
        model="deepseek-ocr", messages=image_message(), max_tokens=8192, temperature=0.0,
        extra_body={"skip_special_tokens": False,
                    "vllm_xargs": {"ngram_size": 30, "window_size": 90, "whitelist_token_ids": [td, td_close]}})
    choice = response.choices[0]
    assert choice.finish_reason in ("stop", "length") and isinstance(choice.message.content, str)
    assert response.usage.completion_tokens > 0
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_streaming_gives_the_same_text_in_openai_chunks(client) -> None:
    kwargs = {"model": "m", "messages": image_message("<image>\n<|grounding|>OCR this image."), "max_tokens": 24,
              "extra_body": {"skip_special_tokens": False}}
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens == 24


def test_skip_special_tokens_defaults_to_vllms(client, tiny_checkpoint: Path) -> None:
    specials = Tokenizer.from_file(tiny_checkpoint / "tokenizer.json").special_tokens()
    kwargs = {"model": "m", "messages": image_message(), "max_tokens": 48, "seed": 1, "temperature": 1.0}
    kept = client.chat.completions.create(**kwargs, extra_body={"skip_special_tokens": False})
    skipped = client.chat.completions.create(**kwargs)
    text = kept.choices[0].message.content
    for token in specials:
        text = text.replace(token, "")
    assert skipped.choices[0].message.content == text


@pytest.mark.parametrize("messages, message", [
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}]}],
     "remote URLs are refused"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}]}],
     "not valid base64"),
    ([{"role": "user", "content": "no image here"}], "exactly one image"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_uri(b"not an image")}}]}],
     "image:"),
])
def test_bad_chat_requests_are_400_in_openai_shape(client, messages, message) -> None:
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="m", messages=messages, max_tokens=4)
    assert message in error.value.body["message"] and error.value.body["type"] == "invalid_request_error"


def test_unknown_whitelist_ids_and_bad_sampling_are_refused(client) -> None:
    with pytest.raises(openai.BadRequestError, match="unknown ids"):
        client.chat.completions.create(model="m", messages=image_message(), max_tokens=4,
                                       extra_body={"vllm_xargs": {"whitelist_token_ids": [10**7]}})
    with pytest.raises(openai.BadRequestError, match="top_p"):
        client.chat.completions.create(model="m", messages=image_message(), max_tokens=4, top_p=0)


def test_v1_ocr_in_the_mistral_shape(server) -> None:
    body = {"model": "deepseek-ocr", "document": {"type": "document_url",
                                                  "document_url": data_uri(pdf_bytes(3), "application/pdf")},
            "pages": [0, 2], "include_image_base64": True, "max_tokens": 16}
    response = httpx.post(server.url + "/v1/ocr", json=body, timeout=300)
    assert response.status_code == 200, response.text
    result = response.json()
    assert [p["index"] for p in result["pages"]] == [0, 2]
    page = result["pages"][0]
    assert page["dimensions"] == {"dpi": 144, "width": 1224, "height": 1584}
    assert isinstance(page["markdown"], str) and page["status"] in ("ok", "truncated", "repetition")
    assert result["usage_info"]["pages_processed"] == 2 and result["model"] == "deepseek-ocr"
    image = httpx.post(server.url + "/v1/ocr", json={"document": {"type": "image_url",
                                                                   "image_url": data_uri(png_bytes())},
                                                      "max_tokens": 8}, timeout=300).json()
    assert image["pages"][0]["dimensions"]["width"] == 300
    broken = httpx.post(server.url + "/v1/ocr", json={"document": {"type": "document_url",
                                                                    "document_url": data_uri(b"%PDF-1.4 junk")}})
    assert broken.status_code == 400 and "not a valid PDF" in broken.json()["error"]["message"]


def _upload(server, data: bytes, name: str = "report.pdf", **fields: str) -> httpx.Response:
    return httpx.post(server.url + "/v1/documents", files={"file": (name, data, "application/pdf")},
                      data={"max_tokens": "8", **fields}, timeout=60)


def _wait_done(server, job_id: str, timeout: float = 300) -> dict:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{server.url}/v1/documents/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {job}")


def test_document_job_lifecycle(server) -> None:
    pdf = pdf_bytes(3)
    created = _upload(server, pdf, pages="1-2")
    assert created.status_code == 202, created.text
    job = created.json()
    assert job["status"] in ("queued", "running") and job["filename"] == "report.pdf"
    again = _upload(server, pdf, pages="1-2")
    assert again.status_code == 200 and again.json()["id"] == job["id"]  # same content and options

    with httpx.stream("GET", f"{server.url}/v1/documents/{job['id']}/events", timeout=300) as events:
        lines = [line for line in events.iter_lines() if line]
    kinds = [line.split(": ", 1)[1] for line in lines if line.startswith("event: ")]
    assert kinds[-1] == "done" and set(kinds) <= {"progress", "done"}
    final = json.loads(lines[-1].split(": ", 1)[1])
    assert final["status"] == "done" and final["pages_done"] == final["pages_total"] == 2

    base = f"{server.url}/v1/documents/{job['id']}"
    response = httpx.get(base + "/result?format=json")
    assert response.headers["content-disposition"] == 'inline; filename="report.json"'
    document = response.json()
    jsonschema.validate(document, json_schema())
    assert (document["source"], document["name"]) == ("report.pdf", "report")  # no server paths
    assert [p["number"] for p in document["pages"]] == [1, 2]
    assert "<--- Page Split --->" in httpx.get(base + "/result?format=md").text
    assert httpx.get(base + "/result?format=html").text.count('<section class="page"') == 2
    archive = zipfile.ZipFile(io.BytesIO(httpx.get(base + "/result?format=zip").content))
    assert {"document.md", "document.json", "document.html", "pages/page-0001.jpg"} <= set(archive.namelist())
    assert httpx.get(base + "/pages/2/image").headers["content-type"] == "image/jpeg"
    assert httpx.get(base + "/result?format=docx").status_code == 400
    assert "<title>report.pdf</title>" in httpx.get(base + "/result?format=html").text
    assert httpx.get(base + "/images/..%2Fjobs.sqlite3").status_code == 404
    figure = server.data_dir / "jobs" / job["id"] / "out" / "input" / "images" / "page-0001-1.jpg"
    figure.parent.mkdir(exist_ok=True)  # the random model draws no figure boxes: place one as the pipeline would
    figure.write_bytes(b"\xff\xd8jpeg")
    assert httpx.get(base + "/images/page-0001-1.jpg").content == b"\xff\xd8jpeg"

    listing = httpx.get(server.url + "/v1/documents?limit=1").json()
    assert listing["object"] == "list" and len(listing["data"]) == 1
    assert httpx.delete(base).json() == {"id": job["id"], "object": "document", "deleted": True}
    assert httpx.get(base).status_code == 404 and httpx.get(base).json()["error"]["type"] == "not_found_error"


def test_a_bad_upload_is_refused_at_once(server) -> None:
    response = _upload(server, b"this is not a document", name="../../etc/passwd")
    assert response.status_code == 400 and "not a PDF or an image" in response.json()["error"]["message"]
    assert "/etc/passwd" not in response.text
    missing = httpx.post(server.url + "/v1/documents", data={"pages": "1"})
    assert missing.status_code == 400 and "file" in missing.json()["error"]["message"]
    wrong_pages = _upload(server, pdf_bytes(1), pages="5-")
    assert wrong_pages.status_code == 400 and "selects none" in wrong_pages.json()["error"]["message"]


def test_metrics_count_requests_and_pages(server, client) -> None:
    client.chat.completions.create(model="m", messages=image_message(), max_tokens=4)
    text = httpx.get(server.url + "/metrics").text
    assert 'dsocr_http_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert "dsocr_engine_generated_tokens_total" in text and "dsocr_engine_queue_depth" in text
    assert "dsocr_http_request_seconds_bucket" in text and 'dsocr_pages_total{status=' in text


def _dsocr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsocr", *args], capture_output=True, text=True, timeout=300,
                          check=False)


def test_convert_with_endpoint_reads_like_the_local_model(server, tiny_checkpoint: Path, tmp_path: Path) -> None:
    pdf = tmp_path / "two.pdf"
    pdf.write_bytes(pdf_bytes(2))
    common = ["convert", str(pdf), "--max-tokens", "12", "--retries", "0", "-q"]
    remote = _dsocr(*common, "-o", str(tmp_path / "remote"), "--endpoint", server.url + "/v1")
    local = _dsocr(*common, "-o", str(tmp_path / "local"), "--model", str(tiny_checkpoint))
    assert remote.returncode == 0 and local.returncode == 0, remote.stderr + local.stderr
    remote_doc = json.loads((tmp_path / "remote/two/two.json").read_text())
    local_doc = json.loads((tmp_path / "local/two/two.json").read_text())
    # Same model, same pixels (PNG), same greedy decoding: the same text, page by page.
    assert [p["raw"] for p in remote_doc["pages"]] == [p["raw"] for p in local_doc["pages"]]
    assert [p["generated_tokens"] for p in remote_doc["pages"]] == [p["generated_tokens"] for p in local_doc["pages"]]

    down = _dsocr(*common, "-o", str(tmp_path / "x"), "--endpoint", "http://127.0.0.1:9/v1")
    assert down.returncode != 0 and "dsocr: error: http://127.0.0.1:9/v1" in down.stderr

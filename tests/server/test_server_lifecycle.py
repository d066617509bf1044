"""The server's hard cases: SIGKILL mid-job and restart, overload (429), API keys, upload limits, webhooks."""

from __future__ import annotations

import json
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest
from server_helpers import data_uri, free_port, pdf_bytes, png_bytes, start_server

pytestmark = pytest.mark.slow


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_job_survives_sigkill_and_finishes_after_restart(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    first = start_server(tiny_checkpoint, data, "--max-batch", "1", port=port)
    try:
        response = httpx.post(first.url + "/v1/documents", files={"file": ("long.pdf", pdf_bytes(8))},
                              data={"max_tokens": "40"}, timeout=60)
        job = response.json()
        deadline = time.monotonic() + 300
        while httpx.get(f"{first.url}/v1/documents/{job['id']}").json()["pages_done"] < 2:
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
    finally:
        first.stop(signal.SIGKILL)
    done_before = len(list((data / "jobs" / job["id"] / "out" / "input" / ".partial").glob("page-*.json")))
    assert 2 <= done_before < 8, "the server was not killed mid-job"

    second = start_server(tiny_checkpoint, data, "--max-batch", "1", port=port)
    try:
        deadline = time.monotonic() + 300
        while (status := httpx.get(f"{second.url}/v1/documents/{job['id']}").json())["status"] != "done":
            assert status["status"] in ("queued", "running") and time.monotonic() < deadline, status
            time.sleep(0.1)
        document = httpx.get(f"{second.url}/v1/documents/{job['id']}/result?format=json").json()
        assert [p["number"] for p in document["pages"]] == list(range(1, 9))
        # Each page costs at most 4 model runs (the first try, fewer crops, two halves): the restarted server
        # ran the pages the first one had not recorded, and no other.
        assert _metric(second.url, "dsocr_engine_requests_total") <= 4 * (8 - done_before)
    finally:
        second.stop()


@pytest.fixture(scope="module")
def strict(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    server = start_server(tiny_checkpoint, tmp_path_factory.mktemp("strict") / "data", "--api-key", "sesame",
                          "--max-queue", "2", "--max-batch", "1", "--max-upload-mb", "1", "--max-pages", "3",
                          "--timeout", "1.5")
    yield server
    server.stop()


AUTH = {"Authorization": "Bearer sesame"}


def _chat(url: str, max_tokens: int, headers: dict | None = None, **extra: object) -> httpx.Response:
    body = {"model": "m", "max_tokens": max_tokens, **extra, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_uri(png_bytes())}}, {"type": "text", "text": "Free OCR."}]}]}
    return httpx.post(url + "/v1/chat/completions", json=body, headers=headers if headers is not None else AUTH,
                      timeout=300)


def test_api_keys_guard_everything_but_health_and_the_page(strict) -> None:
    assert httpx.get(strict.url + "/health").status_code == 200
    for path in ("/v1/models", "/v1/documents", "/metrics", "/ready"):
        response = httpx.get(strict.url + path)
        assert response.status_code == 401, path
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(strict.url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(strict.url + "/v1/models", headers=AUTH).status_code == 200


def test_overload_gets_429_with_retry_after(strict) -> None:
    results: list[httpx.Response] = []

    def send() -> None:
        results.append(_chat(strict.url, 200))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(r.status_code for r in results)
    assert 200 in codes and 429 in codes, codes
    refused = next(r for r in results if r.status_code == 429)
    assert refused.headers["retry-after"] == "2" and refused.json()["error"]["type"] == "rate_limit_error"


def test_a_request_over_the_timeout_gets_504(strict) -> None:
    response = _chat(strict.url, 1900, ignore_eos=True, stop_on_loop=False)  # 3.5-7 s of the tiny model on 2 cores
    assert response.status_code == 504 and response.json()["error"]["type"] == "timeout_error"


def test_upload_limits(strict) -> None:
    big = httpx.post(strict.url + "/v1/documents", headers=AUTH, timeout=60,
                     files={"file": ("big.pdf", b"%PDF-1.4\n" + b"0" * (2 * 2**20))})
    assert big.status_code == 413 and big.json()["error"]["code"] == "upload_too_large"
    many = httpx.post(strict.url + "/v1/documents", headers=AUTH, timeout=60, files={"file": ("m.pdf", pdf_bytes(4))})
    assert many.status_code == 413 and "more than the limit of 3" in many.json()["error"]["message"]
    assert httpx.post(strict.url + "/v1/documents", headers=AUTH, timeout=60, files={"file": ("m.pdf", pdf_bytes(4))},
                      data={"pages": "1-3", "max_tokens": "8"}).status_code == 202
    not_json = httpx.post(strict.url + "/v1/chat/completions", headers=AUTH, content=b"{oops")
    assert not_json.status_code == 400 and not_json.json()["error"]["message"] == "the body is not valid JSON"
    too_many_tokens = _chat(strict.url, 10**6)
    assert too_many_tokens.status_code == 400 and "max_tokens" in too_many_tokens.json()["error"]["message"]


def test_webhook_is_called_when_a_job_ends(server) -> None:
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        job = httpx.post(server.url + "/v1/documents", files={"file": ("w.png", png_bytes("webhook"))},
                         data={"max_tokens": "4", "webhook": f"http://127.0.0.1:{hook.server_port}/done"}).json()
        deadline = time.monotonic() + 120
        while not received and time.monotonic() < deadline:
            time.sleep(0.1)
        assert received and received[0]["id"] == job["id"] and received[0]["status"] == "done"
    finally:
        hook.shutdown()
        hook.server_close()

"""Shared by the server tests: starting real servers, and small documents to send them."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from PIL import Image, ImageDraw


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    data_dir: Path
    args: list[str]
    log: Path

    def stop(self, sig: int | None = None) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig or signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, data_dir: Path, *extra: str, port: int | None = None) -> Server:
    port = port or free_port()
    args = [sys.executable, "-m", "dsocr", "serve", "--model", str(model), "--host", "127.0.0.1", "--port",
            str(port), "--data-dir", str(data_dir), *extra]
    log = data_dir.parent / f"server-{port}-{time.monotonic_ns()}.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    server = Server(f"http://127.0.0.1:{port}", process, data_dir, args, log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(server.url + "/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not start: {log.read_text()[-2000:]}")


def png_bytes(text: str = "Hello", size: tuple[int, int] = (300, 200)) -> bytes:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((10, 10), text, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pdf_bytes(pages: int) -> bytes:
    images = [Image.new("RGB", (612, 792), "white") for _ in range(pages)]
    for i, image in enumerate(images):
        ImageDraw.Draw(image).text((72, 72), f"Page {i + 1}", fill="black")
    buffer = io.BytesIO()
    images[0].save(buffer, format="PDF", save_all=True, append_images=images[1:], resolution=72.0)
    return buffer.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_message(text: str = "Free OCR.", data: bytes | None = None) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_uri(data or png_bytes())}},
                                         {"type": "text", "text": text}]}]

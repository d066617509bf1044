"""Load on `dsocr serve` over loopback against the same engine called in-process: the server's own overhead.

Both sides run the same model (by default the tiny random test checkpoint, built in a temporary folder; any
`--model` works) with the same engine settings, and get `--requests` OCR requests (one image each, greedy,
`--max-tokens` tokens, EOS ignored so every request costs the same) from `--concurrency` clients at once:

- in-process: threads calling `Engine.submit` on an engine in this process (prepare included);
- server: a `dsocr serve` subprocess on 127.0.0.1, clients POSTing /v1/chat/completions with the image as a
  data URI (HTTP, JSON, base64, image decoding and the OpenAI response included).

It prints requests/s and latency percentiles side by side, and the server/in-process ratio.

    python benchmarks/server_load.py [--requests 64] [--concurrency 8] [--max-tokens 16] [--model DIR]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from PIL import Image, ImageDraw

from dsocr.api import OCR
from dsocr.generation.params import SamplingParams
from dsocr.server.engine import Engine
from dsocr.testing.fixtures import tiny_config, write_random_checkpoint


def page_png() -> bytes:
    image = Image.new("RGB", (612, 792), "white")
    draw = ImageDraw.Draw(image)
    for i in range(20):
        draw.text((60, 60 + 30 * i), f"Line {i}: the quick brown fox jumps over the lazy dog.", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def percentiles(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "mean": statistics.mean(ordered)}


def in_process(model: Path, image: bytes, args: argparse.Namespace) -> tuple[float, list[float]]:
    engine = Engine(OCR.from_pretrained(model, device=args.device), max_batch=args.max_batch, max_queue=10**6)
    sampling = SamplingParams(max_new_tokens=args.max_tokens, ignore_eos=True)

    def one(_: int) -> float:
        start = time.perf_counter()
        engine.run(engine.ocr.prepare(image, "Free OCR."), sampling)
        return time.perf_counter() - start

    engine.run(engine.ocr.prepare(image, "Free OCR."), sampling)  # warm-up
    start = time.perf_counter()
    with ThreadPoolExecutor(args.concurrency) as pool:
        latencies = list(pool.map(one, range(args.requests)))
    wall = time.perf_counter() - start
    engine.stop()
    return wall, latencies


def over_http(model: Path, image: bytes, args: argparse.Namespace, data_dir: Path) -> tuple[float, list[float]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "dsocr", "serve", "--model", str(model), "--port", str(port),
                               "--data-dir", str(data_dir), "--device", args.device, "--max-batch",
                               str(args.max_batch), "--max-queue", str(10**6)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    body = {"model": "m", "max_tokens": args.max_tokens, "temperature": 0, "ignore_eos": True,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(image).decode()}},
                {"type": "text", "text": "Free OCR."}]}]}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=args.concurrency)) as client:
            def one(_: int) -> float:
                start = time.perf_counter()
                response = client.post(url + "/v1/chat/completions", json=body)
                response.raise_for_status()
                return time.perf_counter() - start

            one(0)  # warm-up
            start = time.perf_counter()
            with ThreadPoolExecutor(args.concurrency) as pool:
                latencies = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=60)
    return wall, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", type=Path, default=None, help="default: the tiny random test checkpoint")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or write_random_checkpoint(Path(tmp) / "tiny", tiny_config(), seed=0)
        image = page_png()
        local_wall, local = in_process(model, image, args)
        http_wall, remote = over_http(model, image, args, Path(tmp) / "data")
    n = args.requests
    print(f"# {n} requests, {args.concurrency} concurrent, {args.max_tokens} tokens each, max batch "
          f"{args.max_batch}, model {args.model or 'tiny random checkpoint'}")
    print(f"{'':14s} {'in-process':>11s} {'server':>9s} {'ratio':>7s}")
    print(f"{'requests/s':14s} {n / local_wall:11.2f} {n / http_wall:9.2f} {local_wall / http_wall:6.2f}x")
    lp, rp = percentiles(local), percentiles(remote)
    for key in ("mean", "p50", "p90", "p99"):
        print(f"{key + ' (ms)':14s} {1000 * lp[key]:11.1f} {1000 * rp[key]:9.1f} {rp[key] / lp[key]:6.2f}x")


if __name__ == "__main__":
    main()

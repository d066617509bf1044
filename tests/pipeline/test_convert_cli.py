"""`dsocr convert` end to end: a real subprocess on the tiny random checkpoint, real PDFs, a real SIGKILL."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import jsonschema
import pytest
from PIL import Image, ImageDraw

from dsocr.pipeline.document import json_schema

DATA = Path(__file__).parent.parent / "data"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dsocr", *args]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_cmd(*args), check=False, capture_output=True, text=True, timeout=600, env=ENV)


def make_pdf(path: Path, pages: int) -> Path:
    images = []
    for i in range(pages):
        image = Image.new("RGB", (612, 792), "white")
        ImageDraw.Draw(image).text((72, 72), f"Page {i + 1}", fill="black")
        images.append(image)
    images[0].save(path, save_all=True, append_images=images[1:], resolution=72.0)
    return path


def test_convert_writes_every_format_and_reports(tiny_checkpoint: Path, tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "report.pdf", 3)
    out = tmp_path / "out"
    proc = _run("convert", str(pdf), "-o", str(out), "--model", str(tiny_checkpoint), "--max-tokens", "12",
                "--pages", "1,3", "--format", "md,json,html,pdf", "--retries", "0")
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "report/report.json").read_text())
    jsonschema.validate(data, json_schema())
    assert [p["number"] for p in data["pages"]] == [1, 3] and data["num_pages"] == 3
    assert all(p["generated_tokens"] <= 12 and p["status"] in {"ok", "truncated", "repetition"}
               for p in data["pages"])
    assert data["model"] == str(tiny_checkpoint)
    for suffix in ("md", "html", "pdf"):
        assert (out / f"report/report.{suffix}").stat().st_size > 0
    assert (out / "report/pages/page-0003.jpg").exists() and not (out / "report/.partial").exists()
    # Not a terminal: no progress bar, one summary line.
    assert "\r" not in proc.stderr
    assert "dsocr: 1 document, 2 pages (" in proc.stderr and "pages/s" in proc.stderr


def test_bad_documents_are_reported_and_the_exit_code_says_so(tiny_checkpoint: Path, tmp_path: Path) -> None:
    good = make_pdf(tmp_path / "good.pdf", 1)
    out = tmp_path / "out"
    proc = _run("convert", str(DATA / "invalid.pdf"), str(good), str(DATA / "crazyones-encrypted-256.pdf"),
                "-o", str(out), "--model", str(tiny_checkpoint), "--max-tokens", "4", "--retries", "0")
    assert proc.returncode == 1
    assert f"dsocr: error: {DATA / 'invalid.pdf'}: not a valid PDF (corrupt or truncated)" in proc.stderr
    assert "the PDF is encrypted; give its password with --password" in proc.stderr
    assert "Traceback" not in proc.stderr and "3 documents (2 failed)" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["good"]

    with_password = _run("convert", str(DATA / "crazyones-encrypted-256.pdf"), "-o", str(out), "-q",
                         "--model", str(tiny_checkpoint), "--max-tokens", "4", "--password", "password")
    assert with_password.returncode == 0 and "dsocr: 1 document" not in with_password.stderr  # -q: no summary
    assert (out / "crazyones-encrypted-256/crazyones-encrypted-256.md").exists()


def test_usage_errors(tiny_checkpoint: Path, tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "a.pdf", 1)
    for args, message in ((["--format", "md,docx"], "format: docx"), (["--pages", "x"], "pages: cannot read"),
                          (["--dpi", "5"], "dpi: must be between")):
        proc = _run("convert", str(pdf), "-o", str(tmp_path / "o"), "--model", str(tiny_checkpoint), *args)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    proc = _run("convert", str(tmp_path / "empty-dir-*.pdf"), "-o", str(tmp_path / "o"), "--backend", "stub")
    assert proc.returncode == 1 and "no such file" in proc.stderr


@pytest.mark.slow
def test_a_killed_run_resumes_at_the_first_missing_page(tiny_checkpoint: Path, tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "long.pdf", 10)
    args = ["convert", str(pdf), "--model", str(tiny_checkpoint), "--max-tokens", "24", "--batch-size", "1",
            "--retries", "0"]
    reference = _run(*args, "-o", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr

    out = tmp_path / "out"
    partial = out / "long/.partial"
    process = subprocess.Popen(_cmd(*args, "-o", str(out)), env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while len(list(partial.glob("page-*.json"))) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len(list(partial.glob("page-*.json")))
    assert 3 <= done < 10, "the run was not interrupted midway"
    assert not (out / "long/long.json").exists() and not (out / "long/long.md").exists()

    resumed = _run(*args, "-o", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming, {done} of 10 pages already done" in resumed.stderr
    assert not list(out.rglob("*.tmp")) and not partial.exists()
    first = json.loads((tmp_path / "reference/long/long.json").read_text())
    second = json.loads((out / "long/long.json").read_text())
    assert [p["raw"] for p in second["pages"]] == [p["raw"] for p in first["pages"]]
    assert (out / "long/long.md").read_text() == (tmp_path / "reference/long/long.md").read_text()

    again = _run(*args, "-o", str(out))  # everything is up to date now
    assert again.returncode == 0 and "1 up to date" in again.stderr


def test_progress_bar_on_a_terminal_and_quiet_with_q(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "p.pdf", 3)

    def stderr_on_a_terminal(*extra: str) -> str:
        primary, secondary = pty.openpty()
        fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # rows, columns
        proc = subprocess.run(_cmd("convert", str(pdf), "-o", str(tmp_path / "out"), "--backend", "stub",
                                   "--overwrite", *extra), stderr=secondary, stdout=subprocess.DEVNULL,
                              env=ENV, timeout=300, check=False)
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal has no writer left
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(primary)
        assert proc.returncode == 0
        return b"".join(chunks).decode()

    shown = stderr_on_a_terminal()
    assert "\r  0%|" in shown and "| 3/3 [00:00<00:00," in shown and "page/s]" in shown  # bar, ETA, rate
    assert "dsocr: 1 document, 3 pages (3 ok)" in shown
    assert stderr_on_a_terminal("-q") == ""

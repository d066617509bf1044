"""The CLI end to end, as a user runs it: a real subprocess on a real checkpoint directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw


def _run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dsocr", *args], check=False, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "page.png"
    img = Image.new("RGB", (300, 200), "white")
    ImageDraw.Draw(img).text((10, 10), "Hello", fill="black")
    img.save(path)
    return path


def test_ocr_prints_markdown_to_stdout(tiny_checkpoint: Path, page: Path) -> None:
    proc = _run("ocr", str(page), "--model", str(tiny_checkpoint), "--max-tokens", "8")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(_run("ocr", str(page), "--model", str(tiny_checkpoint), "--max-tokens", "8",
                             "--json").stdout)
    assert proc.stdout == record["markdown"] + "\n"
    assert ("unfinished" in proc.stderr) == (record["finish_reason"] != "stop")


def test_ocr_json_has_text_blocks_ids_finish_reason_and_timings(tiny_checkpoint: Path, page: Path) -> None:
    proc = _run("ocr", str(page), "--model", str(tiny_checkpoint), "--max-tokens", "8", "--json",
                "--prompt", "free")
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout)
    assert record["image"] == str(page)
    assert len(record["token_ids"]) <= 8 and record["finish_reason"] in {"stop", "length"}
    assert {"text", "markdown", "blocks", "timings", "num_image_tokens"} <= set(record)


def test_model_from_environment_variable(tiny_checkpoint: Path, page: Path) -> None:
    proc = _run("ocr", str(page), "--max-tokens", "4", "--json", env={"DSOCR_MODEL": str(tiny_checkpoint)})
    assert proc.returncode == 0, proc.stderr


def test_missing_image_among_good_ones_fails_that_one_only(tiny_checkpoint: Path, page: Path,
                                                            tmp_path: Path) -> None:
    missing = tmp_path / "missing.png"
    proc = _run("ocr", str(page), str(missing), "--model", str(tiny_checkpoint), "--max-tokens", "4", "--json")
    assert proc.returncode == 1
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {r["image"] for r in records} == {str(page), str(missing)}
    assert "error" in next(r for r in records if r["image"] == str(missing))
    assert "missing.png" in proc.stderr and "Traceback" not in proc.stderr


def test_not_an_image_gives_one_clear_line_and_nonzero_exit(tiny_checkpoint: Path, tmp_path: Path) -> None:
    bogus = tmp_path / "notes.png"
    bogus.write_text("this is not a PNG")
    proc = _run("ocr", str(bogus), "--model", str(tiny_checkpoint))
    assert proc.returncode != 0
    assert "notes.png" in proc.stderr and "Traceback" not in proc.stderr


def test_unreadable_checkpoint_gives_one_clear_line(tmp_path: Path, page: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    proc = _run("ocr", str(page), "--model", str(tmp_path))
    assert proc.returncode != 0
    assert proc.stderr.startswith("dsocr: error:") and "Traceback" not in proc.stderr


def test_offline_without_a_cached_model_says_what_to_do(page: Path, tmp_path: Path) -> None:
    proc = _run("ocr", str(page), "--model", "deepseek-ai/DeepSeek-OCR-2",
                env={"HF_HUB_CACHE": str(tmp_path), "HF_HOME": str(tmp_path)})
    assert proc.returncode != 0
    assert "deepseek-ai/DeepSeek-OCR-2" in proc.stderr and "--model" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_deepseek_ocr_mode_environment_variable_is_honoured(tiny_checkpoint: Path, page: Path) -> None:
    proc = _run("ocr", str(page), "--model", str(tiny_checkpoint), "--max-tokens", "2", "--json",
                env={"DEEPSEEK_OCR_MODE": "base"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["num_image_tokens"] == 10
    refused = _run("ocr", str(page), "--model", str(tiny_checkpoint), env={"DEEPSEEK_OCR_MODE": "large"})
    assert refused.returncode != 0 and "large" in refused.stderr


def test_stream_prints_the_same_raw_text_as_it_is_generated(tiny_checkpoint: Path, page: Path) -> None:
    args = ("ocr", str(page), "--model", str(tiny_checkpoint), "--max-tokens", "6")
    streamed, raw = _run(*args, "--stream"), _run(*args, "--raw")
    assert streamed.returncode == 0 and raw.returncode == 0, streamed.stderr
    assert streamed.stdout == raw.stdout and streamed.stdout.strip()

"""Real servers on loopback: `python -m dsocr serve` subprocesses on the tiny random checkpoint."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from server_helpers import Server, start_server


@pytest.fixture(scope="module")
def server(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tiny_checkpoint, tmp_path_factory.mktemp("serve") / "data")
    yield running
    running.stop()

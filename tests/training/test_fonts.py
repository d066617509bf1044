"""Extra font families for line views (training/fonts.py): found by file name in the DSOCR_FONTS folders, used
only when asked for, only for text they have glyphs for. The fonts are the system's Liberation fonts, wherever
its packages put them (Debian: fonts-liberation2 or fonts-liberation, which .ci/run installs)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from random import Random

import pytest

pytest.importorskip("matplotlib")  # the fonts

from dsocr.training import fonts
from dsocr.training.strips import _font, generate_strips

FILES = [name for family in ("sans", "serif", "mono") for name in fonts.EXTRA_FAMILIES[f"liberation-{family}"]]
SYSTEM = {path.name: path for path in sorted(Path("/usr/share/fonts").rglob("Liberation*.ttf"))}
if not set(FILES) <= set(SYSTEM):  # no font file is made here: they are real faces, as training uses
    pytest.skip("needs the Liberation fonts under /usr/share/fonts (Debian: apt-get install fonts-liberation2)",
                allow_module_level=True)


@pytest.fixture()
def liberation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of the nine Liberation files (links to the system's, which distributions lay out differently)."""
    folder = tmp_path / "liberation"
    folder.mkdir()
    for name in FILES:
        (folder / name).symlink_to(SYSTEM[name])
    monkeypatch.setenv(fonts.FONTS_ENV, str(folder))
    return folder


def test_complete_families_are_found_by_file_name(liberation: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    found = fonts.extra_families()
    assert [Path(regular).name for regular, _, _ in found] == [
        "LiberationSans-Regular.ttf", "LiberationSerif-Regular.ttf", "LiberationMono-Regular.ttf"]
    assert all(Path(path).parent == liberation for family in found for path in family)
    # a family with a file missing is left out; unset, there are none
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    for name in fonts.EXTRA_FAMILIES["liberation-sans"][:2]:
        (incomplete / name).write_bytes((liberation / name).read_bytes())
    monkeypatch.setenv(fonts.FONTS_ENV, str(incomplete))
    assert fonts.extra_families() == ()
    monkeypatch.delenv(fonts.FONTS_ENV)
    assert fonts.extra_families() == ()


def test_rows_are_drawn_in_the_extra_families_when_asked(liberation: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    faces = {Path(_font(Random(seed), "Quarterly report").path).name for seed in range(200)}
    assert {"LiberationSans-Regular.ttf", "LiberationSerif-Bold.ttf", "LiberationMono-Italic.ttf"} <= faces
    assert "DejaVuSerif.ttf" in faces  # matplotlib's families stay
    with_fonts = [generate_strips(seed, 384) for seed in range(6)]
    assert [v.image.tobytes() for v in with_fonts] == [generate_strips(s, 384).image.tobytes() for s in range(6)]
    monkeypatch.delenv(fonts.FONTS_ENV)
    without = [generate_strips(seed, 384) for seed in range(6)]
    assert sum(a.image.tobytes() != b.image.tobytes() for a, b in zip(without, with_fonts)) >= 3


def test_text_a_family_cannot_draw_falls_back_to_dejavu(liberation: Path) -> None:
    assert "\u2192" in fonts.covers(str(liberation / "LiberationSans-Regular.ttf"))
    assert "\u6f22" not in fonts.covers(str(liberation / "LiberationSans-Regular.ttf"))
    faces = {Path(_font(Random(seed), "kanji \u6f22").path).name for seed in range(100)}
    assert not any(face.startswith("Liberation") for face in faces), faces


def test_train_refuses_a_font_folder_without_families(tmp_path: Path) -> None:
    for folder, message in ((tmp_path / "nowhere", "no such folder"), (tmp_path, "none of the font families")):
        run = subprocess.run([sys.executable, "-m", "dsocr", "train", "-o", str(tmp_path / "run"), "--fonts",
                              str(folder)], capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode != 0 and message in run.stderr, run.stderr
        assert not (tmp_path / "run").exists()


def test_data_workers_draw_in_the_extra_families_too(liberation: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from itertools import islice

    from torch.utils.data import DataLoader

    from dsocr.training.data import SyntheticExamples

    def images(workers: int) -> list[bytes]:
        examples = SyntheticExamples(0, ("free",), strips=1.0, strip_size=384)
        loader = DataLoader(examples, batch_size=None, num_workers=workers, collate_fn=lambda example: example)
        return [example.image.tobytes() for example in islice(iter(loader), 6)]

    in_worker = images(1)  # what `dsocr train --fonts` runs: the worker reads DSOCR_FONTS as the trainer set it
    assert in_worker == images(0)
    monkeypatch.delenv(fonts.FONTS_ENV)
    assert images(0) != in_worker

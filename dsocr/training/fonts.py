"""Font families for synthetic print beyond matplotlib's (DejaVu, STIX, Computer Modern): the faces documents use
most, or free faces drawn on them, from Debian's font packages.

They are found by file name in the folders `DSOCR_FONTS` names (os.pathsep-separated, searched recursively;
`dsocr train --fonts` sets it), e.g. /usr/share/fonts with the packages installed, or the folder
scripts/collect_fonts.sh fills (what a GPU lease carries). A family is used when its three files are all found.
With DSOCR_FONTS unset there are none, so synthetic data is the same on every machine unless asked otherwise.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

FONTS_ENV = "DSOCR_FONTS"

# regular, bold, italic file names, like synthetic.FONT_FAMILIES; the package each comes from
EXTRA_FAMILIES: dict[str, tuple[str, str, str]] = {
    # metric clones of Arial/Helvetica, Times, Courier, Calibri and Cambria: office documents (fonts-liberation2,
    # fonts-crosextra-carlito, fonts-crosextra-caladea)
    "liberation-sans": ("LiberationSans-Regular.ttf", "LiberationSans-Bold.ttf", "LiberationSans-Italic.ttf"),
    "liberation-serif": ("LiberationSerif-Regular.ttf", "LiberationSerif-Bold.ttf", "LiberationSerif-Italic.ttf"),
    "liberation-mono": ("LiberationMono-Regular.ttf", "LiberationMono-Bold.ttf", "LiberationMono-Italic.ttf"),
    "carlito": ("Carlito-Regular.ttf", "Carlito-Bold.ttf", "Carlito-Italic.ttf"),
    "caladea": ("Caladea-Regular.ttf", "Caladea-Bold.ttf", "Caladea-Italic.ttf"),
    # the PostScript faces as TeX Gyre draws them: Helvetica, Times, Courier, Palatino, Bookman, Century
    # Schoolbook, Avant Garde (fonts-texgyre); Helvetica Narrow (fonts-urw-base35)
    **{f"texgyre-{name}": (f"texgyre{name}-regular.otf", f"texgyre{name}-bold.otf", f"texgyre{name}-italic.otf")
       for name in ("heros", "termes", "cursor", "pagella", "bonum", "schola", "adventor")},
    "nimbus-sans-narrow": ("NimbusSansNarrow-Regular.otf", "NimbusSansNarrow-Bold.otf",
                           "NimbusSansNarrow-Oblique.otf"),
    # faces of the web, reports and books (fonts-open-sans, fonts-roboto-unhinted, fonts-lato, fonts-noto-core,
    # fonts-ebgaramond, fonts-linuxlibertine)
    "open-sans": ("OpenSans-Regular.ttf", "OpenSans-Bold.ttf", "OpenSans-Italic.ttf"),
    "roboto": ("Roboto-Regular.ttf", "Roboto-Bold.ttf", "Roboto-Italic.ttf"),
    "roboto-condensed": ("RobotoCondensed-Regular.ttf", "RobotoCondensed-Bold.ttf", "RobotoCondensed-Italic.ttf"),
    "lato": ("Lato-Regular.ttf", "Lato-Bold.ttf", "Lato-Italic.ttf"),
    "noto-sans": ("NotoSans-Regular.ttf", "NotoSans-Bold.ttf", "NotoSans-Italic.ttf"),
    "noto-serif": ("NotoSerif-Regular.ttf", "NotoSerif-Bold.ttf", "NotoSerif-Italic.ttf"),
    "eb-garamond": ("EBGaramond12-Regular.otf", "EBGaramond12-Bold.otf", "EBGaramond12-Italic.otf"),
    "libertine": ("LinLibertine_R.otf", "LinLibertine_RB.otf", "LinLibertine_RI.otf"),
    "biolinum": ("LinBiolinum_R.otf", "LinBiolinum_RB.otf", "LinBiolinum_RI.otf"),
}


def extra_families() -> tuple[tuple[str, str, str], ...]:
    """The EXTRA_FAMILIES found in the DSOCR_FONTS folders, as (regular, bold, italic) paths, in table order."""
    return _families(os.environ.get(FONTS_ENV, ""))


@lru_cache(maxsize=8)
def _families(folders: str) -> tuple[tuple[str, str, str], ...]:
    wanted = {name for files in EXTRA_FAMILIES.values() for name in files}
    found: dict[str, Path] = {}
    for folder in filter(None, folders.split(os.pathsep)):
        for path in sorted(Path(folder).expanduser().rglob("*.[ot]tf")):
            if path.name in wanted:
                found.setdefault(path.name, path)
    return tuple((str(found[r]), str(found[b]), str(found[i])) for r, b, i in EXTRA_FAMILIES.values()
                 if r in found and b in found and i in found)


@lru_cache(maxsize=256)
def covers(path: str) -> frozenset[str]:
    """The characters a font file has glyphs for (its cmap): a row in a face without one of its characters
    would show an empty box where its target has the character."""
    from fontTools.ttLib import TTFont  # matplotlib's own dependency

    with TTFont(path, lazy=True) as font:
        return frozenset(chr(code) for code in font.getBestCmap())


@lru_cache(maxsize=1024)
def load_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    """An extra family's face at `size` px, laid out without text shaping: the OpenType tables of some of
    these faces make shaping ~5x slower, and a row of Latin text needs no more than kerning."""
    return ImageFont.truetype(path, size, layout_engine=ImageFont.Layout.BASIC)

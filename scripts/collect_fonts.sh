#!/usr/bin/env bash
# Fill a folder (default: fonts/, which .gitignore keeps out of commits) with the font files of
# dsocr.training.fonts.EXTRA_FAMILIES, taken from Debian's font packages (downloaded, unpacked, not installed;
# no root needed), cut to the characters rows use and without hinting: what `dsocr train --fonts fonts` draws
# line views in, and what a GPU lease carries (~5 MB).
#
#   bash scripts/collect_fonts.sh [DIR]
set -euo pipefail
DEST=${1:-fonts}
PACKAGES=(fonts-liberation2 fonts-crosextra-carlito fonts-crosextra-caladea fonts-texgyre fonts-urw-base35
          fonts-open-sans fonts-roboto-unhinted fonts-lato fonts-noto-core fonts-ebgaramond fonts-linuxlibertine)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download "${PACKAGES[@]}" >/dev/null)
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
mkdir -p "$DEST"
python3 - "$work/root" "$DEST" <<'PY'
import logging, sys
from pathlib import Path
from fontTools import subset  # matplotlib's dependency
from dsocr.training.fonts import EXTRA_FAMILIES

# What rows are typeset in (Latin, Greek, punctuation, currency, arrows, maths, bullets), without hinting: a
# fifth of the size (the lease carries them), and hinting made some faces 3x slower to draw.
UNICODES = [*range(0x20, 0x7F), *range(0xA0, 0x180), *range(0x370, 0x400), *range(0x2010, 0x205F),
            *range(0x20A0, 0x20C0), *range(0x2100, 0x2150), *range(0x2190, 0x2300), *range(0x25A0, 0x2600)]
logging.disable(logging.WARNING)  # fontTools' notes on tables it drops
root, dest = Path(sys.argv[1]), Path(sys.argv[2])
found = {p.name: p for p in root.rglob("*.[ot]tf")}
wanted = [name for files in EXTRA_FAMILIES.values() for name in files]
missing = [name for name in wanted if name not in found]
options = subset.Options(hinting=False, desubroutinize=True)
for name in wanted:
    if name in found:
        font = subset.load_font(str(found[name]), options)
        subsetter = subset.Subsetter(options)
        subsetter.populate(unicodes=UNICODES)
        subsetter.subset(font)
        subset.save_font(font, str(dest / name), options)
print(f"{len(wanted) - len(missing)} font files in {dest}" + (f"; missing: {', '.join(missing)}" if missing else ""))
sys.exit(1 if missing else 0)
PY

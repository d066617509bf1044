#!/usr/bin/env bash
# Fill a folder (default: fonts/, which .gitignore keeps out of commits) with the font files of
# dsocr.training.fonts.EXTRA_FAMILIES, taken from Debian's font packages (downloaded, unpacked, not installed;
# no root needed): what `dsocr train --fonts fonts` draws line views in, and what a GPU lease carries (~20 MB).
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
import shutil, sys
from pathlib import Path
from dsocr.training.fonts import EXTRA_FAMILIES

root, dest = Path(sys.argv[1]), Path(sys.argv[2])
found = {p.name: p for p in root.rglob("*.[ot]tf")}
wanted = [name for files in EXTRA_FAMILIES.values() for name in files]
missing = [name for name in wanted if name not in found]
for name in wanted:
    if name in found:
        shutil.copyfile(found[name], dest / name)
print(f"{len(wanted) - len(missing)} font files in {dest}" + (f"; missing: {', '.join(missing)}" if missing else ""))
sys.exit(1 if missing else 0)
PY

"""Synthetic page generation speed on one core: the default config against its own pages without augmentation
(the baseline, same layouts), always-augmented pages and plain-text pages, side by side; then the line views
that train a model that reads lines (`training/strips.py`, 640 px, what one DataLoader worker makes per example).

    python benchmarks/synthetic.py [--pages 200] [--views 300] [--fonts DIR] [--cpu 0] [--profile]

Each config renders the same seeds, so the rows differ only in what the config turns on. The process is pinned
to one CPU (Linux) and numpy to one thread; `--profile` adds the default config's top functions by own time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy loads: one core means one thread

import argparse
import cProfile
import dataclasses
import pstats
import time

from dsocr.training import fonts, strips
from dsocr.training.synthetic import SyntheticConfig, generate_page

BASELINE = "no augmentation"
CONFIGS = {
    "default (augment 0.5)": SyntheticConfig(),
    BASELINE: SyntheticConfig(augment=0.0),
    "always augmented": SyntheticConfig(augment=1.0),
    "plain text only": SyntheticConfig(augment=0.0, p_table=0.0, p_formula=0.0, p_figure=0.0, p_list=0.0),
}


def measure(config: SyntheticConfig, seeds: range) -> dict[str, float]:
    start = time.perf_counter()
    pixels = blocks = chars = 0
    for seed in seeds:
        page = generate_page(seed, config)
        pixels += page.image.width * page.image.height
        blocks += len(page.blocks)
        chars += len(page.grounding_target())
    seconds = time.perf_counter() - start
    n = len(seeds)
    return {"pages_per_s": n / seconds, "ms_per_page": 1000 * seconds / n, "megapixels": pixels / n / 1e6,
            "blocks": blocks / n, "target_chars": chars / n}


def measure_strips(seeds: range, size: int = 640, p_formula: float | None = None) -> dict[str, float]:
    """Line views per second; `p_formula` in place of strips.P_FORMULA (the share of rows that are formulas)."""
    default = strips.P_FORMULA
    strips.P_FORMULA = default if p_formula is None else p_formula
    try:
        start = time.perf_counter()
        rows = chars = 0
        for seed in seeds:
            view = strips.generate_strips(seed, size)
            rows += len(view.rows)
            chars += len(view.target)
        seconds = time.perf_counter() - start
    finally:
        strips.P_FORMULA = default
    return {"views_per_s": len(seeds) / seconds, "ms_per_view": 1000 * seconds / len(seeds),
            "rows": rows / len(seeds), "chars": chars / len(seeds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=200, help="pages per config")
    parser.add_argument("--views", type=int, default=300, help="line views (0: none)")
    parser.add_argument("--cpu", type=int, default=0, help="the CPU to pin to (Linux)")
    parser.add_argument("--fonts", help="also line views with the extra font families found in this folder")
    parser.add_argument("--profile", action="store_true", help="profile the default config afterwards")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    for seed in range(5):  # warm-up: fonts, matplotlib import, mathtext parser
        generate_page(10_000 + seed)

    seeds = range(args.pages)
    results = {name: measure(config, seeds) for name, config in CONFIGS.items()}
    base = results[BASELINE]["pages_per_s"]
    print(f"{args.pages} pages per config, one core, default widths {SyntheticConfig().width} px")
    print(f"{'config':<24}{'pages/s':>9}{'ms/page':>9}{'vs base':>9}{'Mpx':>7}{'blocks':>8}{'chars':>7}")
    for name, r in results.items():
        print(f"{name:<24}{r['pages_per_s']:>9.1f}{r['ms_per_page']:>9.1f}{r['pages_per_s'] / base:>8.2f}x"
              f"{r['megapixels']:>7.2f}{r['blocks']:>8.1f}{r['target_chars']:>7.0f}")

    if args.views:
        measure_strips(range(10_000, 10_020))  # warm-up: fonts, the docstring corpus
        r = measure_strips(range(args.views))
        print(f"line views, 640 px: {r['views_per_s']:.1f} views/s, {r['ms_per_view']:.1f} ms/view, "
              f"{r['rows']:.1f} rows, {r['chars']:.0f} chars; the pages above: 1 page = "
              f"{base and results[BASELINE]['ms_per_page'] / r['ms_per_view']:.1f} views")
        plain = measure_strips(range(args.views), p_formula=0.0)  # what the formula rows cost
        print(f"line views without formula rows (P_FORMULA {strips.P_FORMULA} -> 0): "
              f"{plain['views_per_s']:.1f} views/s, {plain['ms_per_view']:.1f} ms/view; "
              f"with them {r['views_per_s'] / plain['views_per_s']:.2f}x")
        if args.fonts:  # the same seeds drawn also in the extra families (training/fonts.py)
            os.environ[fonts.FONTS_ENV] = args.fonts
            families = len(fonts.extra_families())
            measure_strips(range(10_000, 10_020))
            f = measure_strips(range(args.views))
            os.environ.pop(fonts.FONTS_ENV)
            print(f"line views with --fonts ({families} more families): "
                  f"{f['views_per_s']:.1f} views/s, {f['ms_per_view']:.1f} ms/view, "
                  f"{f['views_per_s'] / r['views_per_s']:.2f}x the views above")

    if args.profile:
        config = dataclasses.replace(CONFIGS["default (augment 0.5)"])
        profiler = cProfile.Profile()
        profiler.runcall(lambda: [generate_page(seed, config) for seed in seeds])
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()

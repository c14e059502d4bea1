"""Do the placed nodes keep the collection's size mix? Short axes of the ground-truth nodes that insertion places
in real backgrounds, with the redraw-at-once placement (how the training data up to v8 were drawn) and with
the keep-size placement (the default since), against the collection's marks of the region.

Per background: analyse once, then ``--cases`` cases of ``--nodes MIN MAX`` nodes with each placement (same
seeds). Figures per background × placement: positives placed, their measured short-axis quartiles, the share
under 10 mm and from 15 mm on, nodes placed per node asked, seconds per case; and the marks' own figures
(:data:`lymphcad.phantom.truthrule.SIZES`, capped at the node model's 35 mm). Writes
``benchmarks/results/insert_sizes.json`` and prints a table. Synthetic nodes: not TCIA results.

Usage: ``python benchmarks/bench_insert_sizes.py [--cases 12] [--nodes 2 5]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lymphcad import atomic
from lymphcad.io.reader import read_ct
from lymphcad.phantom.insert import analyse_background, canonical_volume, insert_nodes
from lymphcad.phantom.nodemodel import Formation
from lymphcad.phantom.truthrule import SAD_CAP_MM, SIZES

HERE = Path(__file__).resolve().parent
#: abdominal and chest backgrounds of ../shared/data/real-ct (never holdout/); CRLM-CT-1006 is the realism
#: benchmark's abdominal test background (a measurement of the insertion, not of a model)
BACKGROUNDS = (
    ("crlm-ct/CRLM-CT-1006", "abdominal"),
    ("crlm-ct/CRLM-CT-1004", "abdominal"),
    ("totalsegmentator/example_ct.nii.gz", "abdominal"),
    ("cmb-crc/MSB-01068-chest", "mediastinal"),
    ("acrin-flt-breast/013-chest", "mediastinal"),
)
SEED = 77


def real_ct_dir() -> Path:
    """shared/data/real-ct, from ``LYMPHCAD_SHARED`` or beside the checkout."""
    env = os.environ.get("LYMPHCAD_SHARED")
    base = Path(env) if env else HERE.parents[1] / "shared"
    return base / "data" / "real-ct"


def summary(sad: list[float]) -> dict[str, Any]:
    """Quartiles and tail shares of short axes (mm)."""
    a = np.asarray(sad, dtype=float)
    if a.size == 0:
        return {"n": 0}
    q25, q50, q75 = (round(float(v), 2) for v in np.percentile(a, [25, 50, 75]))
    return {
        "n": int(a.size),
        "q25": q25,
        "median": q50,
        "q75": q75,
        "share_below_10mm": round(float((a < 10.0).mean()), 3),
        "share_from_15mm": round(float((a >= 15.0).mean()), 3),
    }


def marks(region: str, n: int = 20000) -> dict[str, Any]:
    """The collection's marks of ``region`` as the node model draws them (capped at 35 mm)."""
    rng = np.random.default_rng(0)
    return summary([SIZES[region].sample(rng, hi=SAD_CAP_MM) for _ in range(n)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=12)
    ap.add_argument("--nodes", type=int, nargs=2, default=(2, 5))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "insert_sizes.json")
    args = ap.parse_args()
    root = real_ct_dir()
    if not root.is_dir():
        sys.exit(f"{root}: shared real CT not found (set LYMPHCAD_SHARED)")
    forms = (Formation.ADDITIVE,)  # the formation does not enter placement
    result: dict[str, Any] = {
        "what": "short axes of placed ground-truth nodes (synthetic insertion), not TCIA results",
        "cases": args.cases,
        "nodes": list(args.nodes),
        "seed": SEED,
        "marks": {r: marks(r) for r in ("mediastinal", "abdominal")},
        "backgrounds": {},
    }
    print(
        "| background | placement | positives | q25 | median | q75 | < 10 mm | ≥ 15 mm | placed/asked | s/case |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for region in ("mediastinal", "abdominal"):
        m = result["marks"][region]
        print(
            f"| marks ({region}) | – | – | {m['q25']} | {m['median']} | {m['q75']} | "
            f"{m['share_below_10mm']:.2f} | {m['share_from_15mm']:.2f} | – | – |"
        )
    for rel, region in BACKGROUNDS:
        vol = canonical_volume(read_ct(root / rel))
        an = analyse_background(vol)
        per: dict[str, Any] = {"region": region}
        for mode, keep in (("redraw", False), ("keep-size", True)):
            sad: list[float] = []
            asked = placed = 0
            t0 = time.perf_counter()
            for c in range(args.cases):
                rng = np.random.default_rng(np.random.SeedSequence([SEED, c]))
                n = int(rng.integers(args.nodes[0], args.nodes[1] + 1))
                res = insert_nodes(vol, n, rng, region=region, formations=forms, analysis=an, keep_size=keep)
                asked += n
                placed += len(res.nodes)
                sad += [x.sad_mm for x in res.nodes if x.positive]
            secs = (time.perf_counter() - t0) / args.cases
            block = summary(sad) | {
                "placed_per_asked": round(placed / max(1, asked), 3),
                "seconds_per_case": round(secs, 2),
            }
            per[mode] = block
            print(
                f"| {rel} | {mode} | {block.get('n', 0)} | {block.get('q25', '–')} | {block.get('median', '–')} | "
                f"{block.get('q75', '–')} | {block.get('share_below_10mm', 0):.2f} | "
                f"{block.get('share_from_15mm', 0):.2f} | {block['placed_per_asked']:.2f} | {secs:.1f} |",
                flush=True,
            )
        result["backgrounds"][rel] = per
    atomic.write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

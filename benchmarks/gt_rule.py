"""Derive the per-region ground-truth rule and size distribution from the collection's released marks.

Reads ../shared/data/ct-lymph-nodes/MED_ABD_LYMPH_ANNOTATIONS (the real TCIA "CT Lymph Nodes" files),
prints the figures, writes ``benchmarks/results/gt_rule.json`` and checks that the constants shipped in
``lymphcad.phantom.truthrule`` (RULES, SIZES) equal what the marks give.

Usage: ``python benchmarks/gt_rule.py [--shared PATH]``
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from lymphcad import atomic
from lymphcad.phantom.truthrule import RULES, SIZES, derive_rule, derive_sizes, read_marked_sizes

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.environ.get("LYMPHCAD_SHARED", str(HERE.parents[1] / "shared")))
    ap.add_argument("--out", default=str(HERE / "results" / "gt_rule.json"))
    a = ap.parse_args()
    ann = Path(a.shared) / "data" / "ct-lymph-nodes" / "MED_ABD_LYMPH_ANNOTATIONS"
    sizes = read_marked_sizes(ann)
    result: dict[str, object] = {
        "source": "TCIA CT Lymph Nodes, MED_ABD_LYMPH_ANNOTATIONS (_sizes.txt), CC BY 3.0; "
        "Roth et al. 2015 doi:10.7937/K9/TCIA.2015.AQIIDCNM",
        "regions": {},
    }
    ok = True
    for reg, d in sizes.items():
        s = np.asarray(d["sad"])
        known = s[s > 0]
        rule = derive_rule(reg, s)
        dist = derive_sizes(reg, s)
        pct = {
            str(p): round(float(np.percentile(known, p)), 2)
            for p in (0, 1, 2.5, 5, 10, 25, 50, 75, 90, 95, 99, 100)
        }
        entry: dict[str, object] = {
            "marks": int(s.size),
            "marks_with_size": int(known.size),
            "sad_percentiles_mm": pct,
            "share_below_10mm": round(float((known < 10).mean()), 4),
            "share_positive": round(float((known >= rule.positive_min_mm).mean()), 4),
            "share_ignore": round(
                float(((known >= rule.ignore_min_mm) & (known < rule.positive_min_mm)).mean()), 4
            ),
            "share_negative": round(float((known < rule.ignore_min_mm).mean()), 4),
            "rule": {"positive_min_mm": rule.positive_min_mm, "ignore_min_mm": rule.ignore_min_mm},
            "size_quantiles": {"levels": list(dist.levels), "sad_mm": list(dist.sad_mm)},
        }
        if d["lad"]:
            ratio = np.asarray(d["lad"]) / s[: len(d["lad"])]
            entry["lad_over_sad_percentiles"] = {
                str(p): round(float(np.percentile(ratio, p)), 3) for p in (5, 25, 50, 75, 95)
            }
        matches = rule == RULES[reg] and dist == SIZES[reg]
        entry["shipped_constants_match"] = matches
        ok &= matches
        result["regions"][reg] = entry  # type: ignore[index]
        print(
            f"{reg:12s} marks {known.size:4d}  median SAD {pct['50']:5.2f} mm  p2.5 {pct['2.5']:5.2f}  min {pct['0']:5.2f}  "
            f"<10 mm {entry['share_below_10mm']:.3f}  rule: positive >= {rule.positive_min_mm} mm, "
            f"ignore {rule.ignore_min_mm}-{rule.positive_min_mm} mm  (positive {entry['share_positive']:.3f}, "
            f"ignore {entry['share_ignore']:.3f}, negative {entry['share_negative']:.3f})  constants match: {matches}"
        )
    atomic.write_json(Path(a.out), result)
    print(f"wrote {a.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

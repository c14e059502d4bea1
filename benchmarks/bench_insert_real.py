"""Insertion into the real backgrounds of ../shared/data/real-ct (never holdout/): nodes placed per case and
per station, ground-truth classes, and the noise level of both image-formation models around the nodes.

For each background: analyse once, then ``--cases`` cases of ``--nodes MIN MAX`` nodes (both formation
models, drawn per node), and one extra case per formation model alone (``p_positive`` 1) for the noise check:
pooled over nodes, the robust SD of the 3×3 high-pass residual in the node cores after insertion against the
same core voxels before (``kept``: the additive model's check) and in homogeneous background (fat, thick soft
tissue) within 10 voxels around them before (``around``: the blend model's check).
Writes ``benchmarks/results/insert_real.json`` and prints a table. Machine load affects the timings.

Usage: ``python benchmarks/bench_insert_real.py [--cases 4] [--nodes 3 6]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from lymphcad import atomic
from lymphcad.io.reader import read_ct
from lymphcad.phantom.background import Tissue
from lymphcad.phantom.formation import noise_level_ratio, robust_sd
from lymphcad.phantom.insert import analyse_background, canonical_volume, insert_nodes
from lymphcad.phantom.nodemodel import Formation
from lymphcad.phantom.truthrule import TruthClass

HERE = Path(__file__).resolve().parent
BACKGROUNDS = (
    "cmb-crc/MSB-01068-chest",
    "crlm-ct/CRLM-CT-1004",
    "crlm-ct/CRLM-CT-1006",
    "acrin-flt-breast/001-chest",
    "acrin-flt-breast/013-chest",
    "acrin-flt-breast/001-abdomen",
    "totalsegmentator/example_ct.nii.gz",
)


def noise_ratio(
    before: np.ndarray, after: np.ndarray, tissue: np.ndarray, all_nodes: np.ndarray, pixel_mm: float
) -> dict[str, float]:
    """Pooled over nodes: robust high-pass SD in node cores after insertion against (kept) the same cores
    before and (around) homogeneous background around the nodes before (``formation.NoiseCheck``)."""
    checks = [
        noise_level_ratio(before, after, tissue, all_nodes == i, pixel_mm=pixel_mm)
        for i in range(1, int(all_nodes.max()) + 1)
    ]
    ins = np.concatenate([c.inside_values for c in checks])
    core = np.concatenate([c.core_before for c in checks])
    around = np.concatenate([c.around_values for c in checks])
    return {
        "inside_sd": robust_sd(ins),
        "core_before_sd": robust_sd(core),
        "around_sd": robust_sd(around),
        "ratio_kept": robust_sd(ins) / robust_sd(core),
        "ratio_around": robust_sd(ins) / robust_sd(around),
        "core_voxels": int(ins.size),
    }


def structures_kept(before: np.ndarray, after: np.ndarray | None) -> dict[str, float]:
    """Voxel count after / before of lumen, airway and bone in the (pushed) tissue map: mass effect keeps them."""
    out: dict[str, float] = {}
    for name, cls in (("vessel", Tissue.VESSEL), ("airway", Tissue.AIRWAY), ("bone", Tissue.BONE)):
        n0 = int((before == cls).sum())
        if after is not None and n0:
            out[name] = round(int((after == cls).sum()) / n0, 4)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=os.environ.get("LYMPHCAD_SHARED", str(HERE.parents[1] / "shared")))
    ap.add_argument("--cases", type=int, default=4)
    ap.add_argument("--nodes", type=int, nargs=2, default=(3, 6))
    ap.add_argument("--backgrounds", nargs="*", default=list(BACKGROUNDS))
    ap.add_argument("--out", default=str(HERE / "results" / "insert_real.json"))
    a = ap.parse_args()
    root = Path(a.shared) / "data" / "real-ct"
    result: dict[str, object] = {"cases": a.cases, "nodes": list(a.nodes), "backgrounds": {}}
    for name in a.backgrounds:
        t0 = time.process_time()
        vol = canonical_volume(read_ct(root / name))
        an = analyse_background(vol)
        t_an = time.process_time() - t0
        cases = []
        for c in range(a.cases):
            rng = np.random.default_rng(np.random.SeedSequence([2026, c]))
            n = int(rng.integers(a.nodes[0], a.nodes[1] + 1))
            t1 = time.process_time()
            res = insert_nodes(vol, n, rng, analysis=an)
            cases.append(
                {
                    "requested": n,
                    "placed": len(res.nodes),
                    "annotated": sum(x.truth is TruthClass.POSITIVE for x in res.nodes),
                    "ignored": sum(x.truth is TruthClass.IGNORE for x in res.nodes),
                    "negative": sum(x.truth is TruthClass.NEGATIVE for x in res.nodes),
                    "by_station": res.by_station,
                    "formations": sorted({x.spec.formation.value for x in res.nodes}),
                    "sad_mm": [round(x.sad_mm, 1) for x in res.nodes],
                    "nearest": [x.nearest for x in res.nodes],
                    "mass_effect": sum(x.placement == "mass_effect" for x in res.nodes),
                    "push_mm": [round(x.push_mm, 1) for x in res.nodes if x.placement == "mass_effect"],
                    "structures_kept": structures_kept(an.tissue, res.tissue),
                    "cpu_s": round(time.process_time() - t1, 1),
                }
            )
        noise = {}
        for f in (Formation.ADDITIVE, Formation.BLEND):
            res = insert_nodes(
                vol, 6, np.random.default_rng(99), formations=(f,), analysis=an, p_positive=1.0
            )
            noise[f.value] = (
                noise_ratio(vol.array, res.image, an.tissue, res.all_nodes, vol.geometry.spacing_zyx[2])
                if res.nodes
                else None
            )
        entry = {
            "region": an.region,
            "landmarks": an.landmarks.summary(),
            "stations": sorted(an.stations),
            "analysis_cpu_s": round(t_an, 1),
            "noise_model_sd": round(an.noise.sd, 1),
            "cases": cases,
            "noise_level": noise,
        }
        result["backgrounds"][name] = entry  # type: ignore[index]
        placed = [c["placed"] for c in cases]
        print(f"{name}: region {an.region}, stations {len(an.stations)}, analysis {t_an:.0f} s CPU")
        for i, c in enumerate(cases):
            print(
                f"  case {i}: placed {c['placed']}/{c['requested']} ({c['mass_effect']} by mass effect), annotated "
                f"{c['annotated']}, ignored {c['ignored']}, negative {c['negative']}: {c['by_station']}; "
                f"structures kept {c['structures_kept']}"
            )
        for f, v in noise.items():
            if v:
                print(
                    f"  noise {f:8s}: core after {v['inside_sd']:.1f}, core before {v['core_before_sd']:.1f}, "
                    f"around {v['around_sd']:.1f} HU: kept {v['ratio_kept']:.3f}, around {v['ratio_around']:.3f} "
                    f"({v['core_voxels']} core voxels)"
                )
        print(f"  placed per case {np.mean(placed):.2f}")
    atomic.write_json(Path(a.out), result)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

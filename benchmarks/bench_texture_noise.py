"""The texture image-formation model on the real backgrounds of ../shared/data/real-ct (never holdout/): the
noise level inside its nodes against the level around them, with the blend model on the same background,
seed and node draws as the reference in the same run, where the texture came from, and how far the mean HU
of the node's core lies from the node's HU (solid nodes; the content's own texture, U(0, 10) HU SD, varies it).

Per background: analyse once, then ``--nodes`` nodes (``p_positive`` 1, seed ``--seed``) by texture alone and
by blend alone (the same random stream: the same nodes at the same places). Noise: pooled over nodes, the
robust SD of the 3×3 high-pass residual in the node cores after insertion against homogeneous fat / soft
tissue within 10 voxels around them before (``formation.NoiseCheck.ratio_around``). Writes
``benchmarks/results/insert_texture.json`` and prints a table; machine load affects the timings.

Usage: ``python benchmarks/bench_texture_noise.py [--nodes 6] [--seed 99]``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from bench_insert_real import BACKGROUNDS  # the same non-holdout real backgrounds
from lymphcad import atomic
from lymphcad.geometry import CTVolume
from lymphcad.io.reader import read_ct
from lymphcad.phantom.formation import noise_level_ratio, robust_sd
from lymphcad.phantom.insert import BackgroundAnalysis, analyse_background, canonical_volume, insert_nodes
from lymphcad.phantom.inserted import InsertionResult
from lymphcad.phantom.nodemodel import Content, Formation

HERE = Path(__file__).resolve().parent


def pooled_ratio(
    before: np.ndarray, res: InsertionResult, tissue: np.ndarray, pixel_mm: float
) -> float | None:
    """Robust high-pass SD in the node cores after insertion / in homogeneous tissue around them before."""
    checks = [
        noise_level_ratio(before, res.image, tissue, res.all_nodes == x.id, pixel_mm=pixel_mm)
        for x in res.nodes
    ]
    ins = np.concatenate([c.inside_values for c in checks]) if checks else np.zeros(0)
    if ins.size < 50:
        return None
    return robust_sd(ins) / robust_sd(np.concatenate([c.around_values for c in checks]))


def core_mean_error(res: InsertionResult) -> list[float]:
    """Solid nodes: the image's mean HU in the node's core (its mask eroded by one voxel in 3D and two more
    in-plane: away from the partial-volume rim and end slices) minus the node's HU; nodes with < 20 core voxels
    are left out."""
    out = []
    for x in res.nodes:
        if x.spec.content is not Content.SOLID:
            continue
        core = ndimage.binary_erosion(res.all_nodes == x.id)
        core = ndimage.binary_erosion(core, structure=np.ones((1, 3, 3), bool), iterations=2)
        if core.sum() >= 20:
            out.append(round(float(res.image[core].mean()) - x.spec.hu, 1))
    return out


def timed_insertion(
    vol: CTVolume, an: BackgroundAnalysis, nodes: int, seed: int, formation: Formation
) -> tuple[InsertionResult, float]:
    """The nodes of ``seed`` written by one formation model (the same nodes for every model), and the CPU
    seconds it took."""
    t0 = time.process_time()
    res = insert_nodes(
        vol, nodes, np.random.default_rng(seed), formations=(formation,), analysis=an, p_positive=1.0
    )
    return res, time.process_time() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--seed", type=int, default=99)
    args = ap.parse_args(argv)
    root = Path(os.environ.get("LYMPHCAD_SHARED", HERE.parent.parent / "shared")) / "data" / "real-ct"
    if not (root / "SOURCES.md").is_file():
        print(f"real CT not found at {root} (set LYMPHCAD_SHARED)", file=sys.stderr)
        return 1
    out: dict[str, object] = {"nodes": args.nodes, "seed": args.seed, "backgrounds": {}}
    print(f"{'background':38s} {'nodes':>5s} {'texture':>8s} {'blend':>8s}  sources            mean HU err")
    for name in BACKGROUNDS:
        vol = canonical_volume(read_ct(root / name))
        an = analyse_background(vol)
        px = vol.geometry.spacing_zyx[2]

        tex, t_tex = timed_insertion(vol, an, args.nodes, args.seed, Formation.TEXTURE)
        ble, t_ble = timed_insertion(vol, an, args.nodes, args.seed, Formation.BLEND)
        kinds: dict[str, int] = {}
        for x in tex.nodes:
            k = x.texture_source.kind.value if x.texture_source else "none"
            kinds[k] = kinds.get(k, 0) + 1
        err = {m: core_mean_error(r) for m, r in (("texture", tex), ("blend", ble))}
        r_tex = pooled_ratio(vol.array, tex, an.tissue, px)
        r_ble = pooled_ratio(vol.array, ble, an.tissue, px)
        out["backgrounds"][name] = {  # type: ignore[index]
            "placed": len(tex.nodes),
            "ratio_around_texture": None if r_tex is None else round(r_tex, 3),
            "ratio_around_blend": None if r_ble is None else round(r_ble, 3),
            "texture_sources": kinds,
            "solid_mean_minus_target_hu": err,
            "cpu_s": {"texture": round(t_tex, 1), "blend": round(t_ble, 1)},
        }
        fmt = lambda r: "   n/a" if r is None else f"{r:8.3f}"  # noqa: E731
        print(f"{name:38s} {len(tex.nodes):5d} {fmt(r_tex)} {fmt(r_ble)}  {kinds!s:18s} {err['texture']}")
    atomic.write_json(HERE / "results" / "insert_texture.json", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

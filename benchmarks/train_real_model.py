"""Reproducibly train the detector for real anatomy (issue 12) on the phantom plus every usable real CT background.

    python benchmarks/train_real_model.py [--work benchmarks/_work/real_model] [--epochs N] [--resume]

Steps (each skipped when its output exists, so an interrupted call continues where it stopped):

1. **Data.** Phantom cohorts (tiny preset, both regions) at difficulties 0.25 / 0.5 / 0.75, and insertion
   cohorts (``lymphcad.phantom.insert``) into every training background of :data:`TRAIN_BACKGROUNDS`: all
   volumetric chest and abdominal CT of shared/data/real-ct except the test backgrounds of the realism
   benchmark (:data:`TEST_BACKGROUNDS`: the two holdout chest crops and CRLM-CT-1006) — contrast and
   non-contrast, sharp and smooth kernels. Insertion uses one image-formation model only
   (:data:`TRAIN_FORMATION`), so the benchmark can test on the other.
2. **Training** (:func:`lymphcad.detector.trainmix.train_mix`): a weighted mix of those sources with
   hard-negative patches (mimic prior, then the network's own false positives re-mined every few
   epochs), CT-physics augmentation (contrast phase, kernel, correlated noise) and the auxiliary node-mask
   loss. One checkpoint per epoch; ``--resume`` continues the newest one (bit-identical on CPU).
   ``--init-from RUN`` starts a new run from another run's weights (a warm start on new data).

The model is measured (and shipped) by ``benchmarks/bench_realism.py``. All figures from these data are
phantom/insertion figures, never TCIA CT Lymph Nodes results.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any, Final

REPO = Path(__file__).resolve().parents[1]
REAL_CT = Path(os.environ.get("LYMPHCAD_SHARED", str(REPO.parent / "shared"))) / "data" / "real-ct"

TRAIN_DIFFICULTIES: Final = (0.25, 0.5, 0.75)
TRAIN_SEEDS: Final = {0.25: 101, 0.5: 102, 0.75: 103}
#: every volumetric chest/abdominal CT in shared/data/real-ct that is neither holdout nor a test background
#: (name → path under real-ct). Not used: slabs thinner than a training patch (mirp-lidc-idri-0314: 24 mm,
#: a patch spans 64 mm), single or scattered slices (dcmqi, lungmask, dicom-numpy, cornerstone), head CT.
TRAIN_BACKGROUNDS: Final = {
    "crlm1004": "crlm-ct/CRLM-CT-1004",
    "ts_abdomen": "totalsegmentator/example_ct.nii.gz",
    "ts_upper_abdomen": "totalsegmentator/example_ct_dicom",
    "cmbcrc_chest": "cmb-crc/MSB-01068-chest",
    "acrin001_abdomen": "acrin-flt-breast/001-abdomen",
    "acrin001_chest": "acrin-flt-breast/001-chest",
    "acrin013_chest": "acrin-flt-breast/013-chest",
}
#: the realism benchmark's test backgrounds (never trained on): two chest (holdout/) and one abdomen
TEST_BACKGROUNDS: Final = {
    "ts_chest_pulmonary": "holdout/totalsegmentator-chest/pulmonary_ct_cropped.nii.gz",
    "ts_chest_aorta": "holdout/totalsegmentator-chest/aorta_ct_cropped.nii.gz",
    "crlm1006": "crlm-ct/CRLM-CT-1006",
}
TRAIN_FORMATION: Final = "additive"
INSERT_SEED: Final = 1200
PHANTOM_CASES: Final = 20


def make_training_data(work: Path, insert_cases: int, nodes: tuple[int, int]) -> list[Any]:
    """Generate (or reuse) the phantom and insertion cohorts; returns the mix sources."""
    from lymphcad.detector.datamix import MixSource
    from lymphcad.phantom import generate_cohort
    from lymphcad.phantom.insert import insert_cohort

    sources = []
    for d in TRAIN_DIFFICULTIES:
        name = f"phantom_d{int(d * 100):03d}"
        root = work / "data" / name
        if not (root / "dataset.json").is_file():
            print(f"[{time.strftime('%H:%M:%S')}] phantom {name}", flush=True)
            generate_cohort(root, PHANTOM_CASES, "both", TRAIN_SEEDS[d], d, "tiny")
        sources.append(MixSource(name, root, "phantom", weight=1.0 / len(TRAIN_DIFFICULTIES)))
    for i, (name, rel) in enumerate(sorted(TRAIN_BACKGROUNDS.items())):
        root = work / "data" / f"insert_{name}"
        if not (root / "dataset.json").is_file():
            print(f"[{time.strftime('%H:%M:%S')}] insertion into {rel}", flush=True)
            insert_cohort(REAL_CT / rel, root, insert_cases, nodes, INSERT_SEED + i)
        sources.append(
            MixSource(
                f"insert_{name}", root, "insertion", weight=2.0 / len(TRAIN_BACKGROUNDS), background=name
            )
        )
    return sources


def real_model_config(epochs: int, threads: int) -> Any:
    """The training configuration of the real-anatomy model (written resolved into the run folder)."""
    from lymphcad.detector.config import DetectorConfig

    return DetectorConfig().updated(
        {
            "network": {"seg_head": True},
            "train": {
                "epochs": epochs,
                "iters_per_epoch": 50,
                "batch_size": 4,
                "patch_zyx": [32, 64, 64],
                "warmup_iters": 50,
                "val_every": 10,
                "lr": 2e-3,
                "device": "cpu",
                "threads": threads,
            },
            "augment": {
                "enhancement_scale": [0.2, 2.0],
                "p_enhancement": 0.7,
                "p_blur": 0.25,
                "blur_sigma_vox": [0.3, 1.0],
                "sharpen_amount": [0.3, 1.2],
                "p_sharpen": 0.25,
                "noise_sd_hu": [0.0, 25.0],
                "noise_corr_sigma_vox": [0.0, 1.0],
                "intensity_shift_hu": 20.0,
            },
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / "_work" / "real_model")
    ap.add_argument("--run", default="run", help="run folder name inside --work")
    ap.add_argument("--epochs", type=int, default=70)
    ap.add_argument("--insert-cases", type=int, default=8, help="insertion cases per training background")
    ap.add_argument("--nodes", type=int, nargs=2, default=(3, 6), help="nodes per insertion case (min max)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: see docs/design.md)")
    ap.add_argument("--resume", action="store_true", help="continue the run's newest checkpoint")
    ap.add_argument("--init-from", default=None, help="start from this run/model's weights (warm start)")
    ap.add_argument("--data-only", action="store_true", help="only generate the training cohorts")
    ap.add_argument("--stop-after-epochs", type=int, default=None, help="end this call after N epochs")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from lymphcad.detector.train import latest_checkpoint
    from lymphcad.detector.trainmix import MixSettings, train_mix

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    sources = make_training_data(work, args.insert_cases, (args.nodes[0], args.nodes[1]))
    if args.data_only:
        return
    run = work / args.run
    resume = args.resume or latest_checkpoint(run) is not None

    def report(done: int, total: int, msg: str) -> None:
        if done % 25 == 0 or done == total:
            print(f"[{time.strftime('%H:%M:%S')}] {done}/{total} {msg}", flush=True)

    result = train_mix(
        sources,
        out=run,
        config=None if resume else real_model_config(args.epochs, args.threads),
        settings=None if resume else MixSettings(),
        resume=resume,
        init_from=args.init_from,
        progress=report,
        stop_after_epochs=args.stop_after_epochs,
    )
    print(f"{result.epochs_done} epochs in {result.run}; {result.seconds / 60:.1f} min this call", flush=True)


if __name__ == "__main__":
    main()

"""Training ends by fitting the model's calibration on its validation fold (issue 16): stored beside the run's
model when the fold holds enough hits, none (raw scores) when it does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lymphcad.cohort import open_cohort
from lymphcad.detector.synthetic import write_sphere_cohort
from lymphcad.detector.train import fit_run_calibration
from lymphcad.io.detections import Detection, write_detections
from lymphcad.measure.calibration import MIN_CLASS_COUNT, find_calibration


def _val_detections(cohort_root: Path, cases: list[str], run: Path, hits: int) -> None:
    """``hits`` detections on annotated nodes (score 0.8) and three far false positives per case (0.2)."""
    cohort = open_cohort(cohort_root)
    dets, n = [], 0
    for case in cases:
        for a in cohort.annotations_for(case):
            if n < hits:
                dets.append(Detection(case, tuple(a.center_xyz), 0.8, 10.0))
                n += 1
        lo, hi = cohort.read_image(case).geometry.world_bounds()
        for k in range(3):
            corner = lo + (hi - lo) * np.array([0.1 + 0.05 * k, 0.1, 0.1])
            dets.append(Detection(case, (float(corner[0]), float(corner[1]), float(corner[2])), 0.2, 6.0))
    assert n == hits, "the cohort holds fewer nodes than the test asks for"
    (run / "model").mkdir(parents=True, exist_ok=True)
    write_detections(run / "val" / "epoch_0002" / "dets.csv", dets)


def test_calibration_is_fitted_on_the_validation_fold_and_stored_beside_the_model(tmp_path: Path) -> None:
    root = write_sphere_cohort(tmp_path / "cohort", n_cases=5, nodes_per_case=3)
    cases = sorted(open_cohort(root).cases)
    run = tmp_path / "run"
    _val_detections(root, cases, run, hits=9)
    path = fit_run_calibration(open_cohort(root), run, cases)
    assert path == run / "model" / "calibration.json"
    cal = find_calibration(run / "model")
    assert cal is not None and cal.method == "isotonic" and cal.n_hits == 9
    assert "validation fold of run run (epoch_0002)" in cal.source
    # every 0.8 detection hit a node, every 0.2 one missed: the map says so
    assert cal.apply(0.8) > 0.95 and cal.apply(0.2) < 0.05


def test_too_few_validation_hits_leave_raw_scores(tmp_path: Path) -> None:
    root = write_sphere_cohort(tmp_path / "cohort", n_cases=3, nodes_per_case=2)
    cases = sorted(open_cohort(root).cases)
    run = tmp_path / "run"
    _val_detections(root, cases, run, hits=MIN_CLASS_COUNT - 1)
    (run / "model" / "calibration.json").write_text("{}", encoding="utf-8")  # a stale one from a rerun
    assert fit_run_calibration(open_cohort(root), run, cases) is None
    assert find_calibration(run / "model") is None

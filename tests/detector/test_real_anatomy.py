"""The shipped model on real anatomy: it finds a node made by either image-formation model in a real CT
background it was never trained on (CRLM-CT-1006, the realism benchmark's abdominal test background).

The operating point is the model's own ranking, not a hand-set probability: a node counts as found when a
detection among the volume's (number of positive nodes + 3) best hits it — at most 3 false positives per
volume, the issue's target operating point. Three insertions per formation (12 nodes) so that one unlucky
draw neither passes nor fails the test alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lymphcad.detector.infer import detect_volume
from lymphcad.detector.model import load_model
from lymphcad.geometry import CTVolume
from lymphcad.io.reader import read_ct
from lymphcad.phantom.insert import insert_nodes
from lymphcad.phantom.nodemodel import Formation

SEEDS = (2026, 7, 11)
#: the default v10 finds 12 of 12 here in either formation, float32 or bfloat16, and the realism benchmark
#: measures 0.92 sensitivity at 3 FP/volume on this background (benchmarks/results/realism.json); 9 of 12
#: leaves room for a later default and the draw. (v3's era bar was 5 of 12, at ≈ 0.5 sensitivity.)
MIN_FOUND = 9


@pytest.mark.slow
@pytest.mark.parametrize("formation", [Formation.ADDITIVE, Formation.BLEND])
def test_shipped_model_finds_inserted_nodes_of_either_formation(
    real_ct_dir: Path, formation: Formation
) -> None:
    background = read_ct(real_ct_dir / "crlm-ct" / "CRLM-CT-1006")
    model = load_model()
    found, total = 0, 0
    for seed in SEEDS:
        res = insert_nodes(
            background,
            4,
            np.random.default_rng(seed),
            region="abdominal",
            formations=(formation,),
            p_positive=1.0,
        )
        positives = [n for n in res.nodes if n.positive]
        assert positives, f"seed {seed}: the insertion placed no ground-truth node"
        assert all(n.spec.formation is formation for n in res.nodes)
        dets = detect_volume(CTVolume(res.image, background.geometry), model)
        top = dets[: len(positives) + 3]
        total += len(positives)
        found += sum(
            any(np.linalg.norm(np.subtract(d.center_xyz, n.xyz)) <= max(5.0, n.sad_mm / 2.0) for d in top)
            for n in positives
        )
    assert total >= 3 * len(SEEDS)
    assert found >= MIN_FOUND, (
        f"{formation.value}: found {found} of {total} nodes among the best (nodes + 3) detections per volume"
    )

"""The realism benchmark's cross-formation gap (benchmarks/bench_realism.py): cases pair across formations by
background and case id, the point gap is CPM(held-out) − CPM(trained), and pairing the bootstrap over the
same nodes narrows its interval when the two formations' scores move together case by case."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from lymphcad.cohort import Annotation
from lymphcad.evaluate.truth import case_truth
from lymphcad.io.detections import Detection
from script_loader import load_script

REPO = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    return load_script(REPO / "benchmarks" / "bench_realism.py", "bench_realism")


def _cohort(form: str, found: list[bool]) -> tuple[list[Any], list[Detection]]:
    """One case per entry, one 12 mm node each at the same place; a hit at p = 0.9 where ``found``, else a
    false positive 80 mm away at p = 0.9 (so a miss also costs a false positive)."""
    truths, dets = [], []
    for k, hit in enumerate(found):
        cid = f"bg_{form}__case{k:02d}"
        truths.append(
            case_truth(cid, region="abdominal", annotations=[Annotation(cid, 1, (0.0, 0.0, 0.0), 12.0)])
        )
        dets.append(Detection(cid, (0.0, 0.0, 0.0) if hit else (80.0, 0.0, 0.0), 0.9))
    return truths, dets


def test_pairs_match_background_and_case() -> None:
    b = _bench()
    ta, _ = _cohort("additive", [True] * 4)
    tb, _ = _cohort("blend", [True] * 3)  # one case fewer: it pairs with nothing
    assert b.formation_pairs(ta, "additive", tb, "blend") == [(0, 0), (1, 1), (2, 2)]


def test_gap_point_and_paired_interval() -> None:
    b = _bench()
    # the same 30 cases: blend finds every node additive finds plus three more; case difficulty varies a lot
    hard = [k % 3 == 0 for k in range(30)]  # 10 cases hard for both
    found_a = [not h for h in hard]
    found_b = [not h or k in (0, 3, 6) for k, h in enumerate(hard)]
    ta, da = _cohort("additive", found_a)
    tb, db = _cohort("blend", found_b)
    pairs = b.formation_pairs(ta, "additive", tb, "blend")
    paired = b.formation_gap(ta, tb, da + db, 200, pairs)
    unpaired = b.formation_gap(ta, tb, da + db, 200, None)
    cpm_a = b._cpm(ta, da)
    cpm_b = b._cpm(tb, db)
    assert cpm_b > cpm_a
    assert paired["gap"] == unpaired["gap"] == round(cpm_b - cpm_a, 4)
    assert paired["paired"] and paired["pairs"] == 30 and not unpaired["paired"]
    lo, hi = paired["ci95"]
    ulo, uhi = unpaired["ci95"]
    assert lo >= 0.0  # pairing: blend never scores below additive on the same cases
    assert ulo < 0.0 < paired["gap"]  # unpaired, case difficulty swamps the difference
    assert hi - lo < uhi - ulo

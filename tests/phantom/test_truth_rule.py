"""The per-region ground-truth rule and size distribution come from the collection's released marks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lymphcad.phantom.nodemodel import (
    Content,
    Formation,
    node_geometry,
    random_rotation,
    render_node,
    sample_node_spec,
)
from lymphcad.phantom.truthrule import (
    RULES,
    SIZES,
    TruthClass,
    derive_rule,
    derive_sizes,
    read_marked_sizes,
)


@pytest.mark.real
def test_rule_and_sizes_equal_the_derivation_from_the_real_marks(shared_dir: Path) -> None:
    ann = shared_dir / "data" / "ct-lymph-nodes" / "MED_ABD_LYMPH_ANNOTATIONS"
    if not ann.is_dir():
        pytest.skip(f"the collection's annotation files are not at {ann}")
    sizes = read_marked_sizes(ann)
    assert len(sizes["abdominal"]["sad"]) == 595 and len(sizes["mediastinal"]["sad"]) == 388
    for reg in ("mediastinal", "abdominal"):
        assert derive_rule(reg, sizes[reg]["sad"]) == RULES[reg]
        assert derive_sizes(reg, sizes[reg]["sad"]) == SIZES[reg]
        s = np.asarray(sizes[reg]["sad"])
        s = s[s > 0]
        # no released mark falls in the negative range; ≥ 97.5 % are positives
        assert all(RULES[reg].classify(v) is not TruthClass.NEGATIVE for v in s)
        assert np.mean([RULES[reg].classify(v) is TruthClass.POSITIVE for v in s]) >= 0.975
    # the abdomen keeps its sub-10 mm marks as ground truth, the mediastinum starts at 10 mm
    assert RULES["abdominal"].positive_min_mm < 10.0 <= RULES["mediastinal"].positive_min_mm


def test_rule_classifies_by_band() -> None:
    r = RULES["abdominal"]
    assert r.classify(r.positive_min_mm) is TruthClass.POSITIVE
    assert r.classify(r.positive_min_mm - 0.01) is TruthClass.IGNORE
    assert r.classify(r.ignore_min_mm - 0.01) is TruthClass.NEGATIVE


def test_node_model_draws_the_documented_variety() -> None:
    rng = np.random.default_rng(0)
    specs = [sample_node_spec(rng, "abdominal", (Formation.ADDITIVE, Formation.BLEND)) for _ in range(3000)]
    sad = np.array([s.sad_mm for s in specs])
    assert sad.min() >= 5.0 and sad.max() <= 35.0
    pos = sad[sad >= RULES["abdominal"].positive_min_mm]
    # positives follow the marked abdominal distribution: median within 0.6 mm of the marks' median
    marks_median = float(np.interp(0.5, SIZES["abdominal"].levels, SIZES["abdominal"].sad_mm))
    assert abs(float(np.median(pos)) - marks_median) < 0.6
    hu = np.array([s.hu for s in specs])
    assert hu.min() >= 10.0 and hu.max() <= 100.0 and hu.std() > 10
    edge = np.array([s.edge_mm for s in specs])
    assert edge.min() >= 0.3 and edge.max() <= 1.5
    kinds = {s.content for s in specs}
    assert kinds == set(Content)
    members = np.array([s.members for s in specs])
    assert set(np.unique(members)) == {1, 2, 3, 4}
    assert 0.05 < np.mean(members > 1) < 0.2
    assert {s.formation for s in specs} == {Formation.ADDITIVE, Formation.BLEND}
    assert np.mean([s.lobulation > 0 for s in specs]) > 0.4


def test_rendered_node_is_deterministic_and_has_its_content() -> None:
    rng = np.random.default_rng(3)
    spec = sample_node_spec(rng, "mediastinal", (Formation.BLEND,), p_positive=1.0)
    geo = node_geometry(spec, np.array([40.0, 40.0, 40.0]), random_rotation(rng))
    a = render_node(spec, geo, (40, 100, 100), (2.0, 0.8, 0.8))
    b = render_node(spec, geo, (40, 100, 100), (2.0, 0.8, 0.8))
    assert a is not None and b is not None
    assert np.array_equal(a.coverage, b.coverage) and np.array_equal(a.content, b.content)
    assert a.coverage.max() == 1.0 and (a.coverage >= 0.5).sum() > 50
    core = a.coverage >= 0.99
    assert abs(float(np.median(a.content[core])) - spec.hu) < 40.0

"""The phantom's typed node parameters: read from a case's parameter dict unchanged, and validated."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from lymphcad.phantom.config import case_rng, sample_case_params
from lymphcad.phantom.nodes import NodeParams


def _case(difficulty: float) -> dict[str, Any]:
    return sample_case_params(
        case_rng(5, 1), seed=5, case_index=1, region="abdominal", difficulty=difficulty, preset="tiny"
    )


@pytest.mark.parametrize("difficulty", [0.0, 0.5, 1.0])
def test_from_case_keeps_the_drawn_values(difficulty: float) -> None:
    p = _case(difficulty)
    nodes, hu = p["nodes"], p["hu"]
    params = NodeParams.from_case(p)
    for f in dataclasses.fields(NodeParams):
        if f.name in ("ln_mean_hu", "stranding_hu"):
            continue
        got = getattr(params, f.name)
        assert got == nodes[f.name] and type(got) is type(nodes[f.name]), f.name
    assert params.ln_mean_hu == hu["ln_mean"]
    assert params.stranding_hu == hu["stranding"]


def test_old_cases_without_soft_contact_place_no_contact_nodes() -> None:
    p = _case(0.5)
    nodes = dict(p["nodes"])
    del nodes["soft_contact_p"]
    assert NodeParams.from_case({**p, "nodes": nodes}).soft_contact_p == 0.0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("soft_contact_p", 1.5, "soft_contact_p must be a probability"),
        ("cluster_p_abd", -0.1, "cluster_p_abd must be a probability"),
        ("stranding_p", float("nan"), "stranding_p must be a probability"),
        ("gap_mean", 0.0, "gap_mean must be > 0"),
        ("n_small", -1, "n_small must be >= 0"),
        ("type_probs", {"solid": 0.0, "necrotic": -0.2}, "positive probability"),
        ("type_probs", {"solid": float("inf")}, "finite probabilities"),
        ("type_probs", {}, "finite probabilities"),
    ],
)
def test_invalid_values_are_refused(field: str, value: object, message: str) -> None:
    good = NodeParams.from_case(_case(0.5))
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(good, **{field: value})

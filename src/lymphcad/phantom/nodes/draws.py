"""What a case draws for its nodes: the node parameters of the case (:class:`NodeParams`) and the per-node
samplers of spec §4.1 (counts, short axes, in-plane ratio, internal type)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from lymphcad.phantom.truthrule import SIZES, rule_for

#: (mean, dispersion k) of the negative binomial of enlarged nodes beyond the first, per region
COUNT_PARAMS: Final = {"mediastinal": (3.3, 2.0), "abdominal": (5.9, 1.5)}


@dataclass(frozen=True)
class NodeParams:
    """What node placement reads of a case's parameters (``nodes`` and two HU of
    :func:`~lymphcad.phantom.config.sample_case_params`); values are kept as drawn so the cohort is unchanged."""

    #: mean of the exponential fat gap (mm) between a node and its anchor
    gap_mean: float
    #: share of enlarged nodes pushed against the nearest soft-tissue structure
    soft_contact_p: float
    #: relative amplitude of the node outline's low-order perturbation
    perturb_amp: float
    #: probability that a mediastinal / abdominal case starts with a cluster of touching nodes
    cluster_p_med: float
    cluster_p_abd: float
    #: sub-threshold nodes drawn per case
    n_small: int
    #: share of enlarged nodes in the smallest 2 mm above the region's threshold
    share_10_12: float
    #: SD (HU) of a node's offset from the case's node HU
    ln_offset_sd: float
    #: SD (HU) of the texture painted into nodes
    texture_sd: float
    #: probability of each internal type of an enlarged node (solid, necrotic, fatty_hilum, hyper, calcified)
    type_probs: Mapping[str, float]
    #: probability of perinodal fat stranding around a node
    stranding_p: float
    #: mean HU of the case's nodes (``hu.ln_mean``)
    ln_mean_hu: float
    #: HU of fat stranding (``hu.stranding``)
    stranding_hu: float

    def __post_init__(self) -> None:
        for name in ("soft_contact_p", "cluster_p_med", "cluster_p_abd", "share_10_12", "stranding_p"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"node parameter {name} must be a probability in [0, 1], got {v!r}")
        if not self.gap_mean > 0.0:
            raise ValueError(f"node parameter gap_mean must be > 0 mm, got {self.gap_mean!r}")
        if self.n_small < 0:
            raise ValueError(f"node parameter n_small must be >= 0, got {self.n_small!r}")
        if not self.type_probs or not all(math.isfinite(v) for v in self.type_probs.values()):
            raise ValueError(
                f"node parameter type_probs must be finite probabilities, got {self.type_probs!r}"
            )
        if sum(max(0.0, v) for v in self.type_probs.values()) <= 0.0:
            raise ValueError("node parameter type_probs must give some type a positive probability")

    @classmethod
    def from_case(cls, params: Mapping[str, Any]) -> NodeParams:
        """The record of a case's parameter dict (values are taken as they are, unconverted)."""
        nodes, hu = params["nodes"], params["hu"]
        return cls(
            gap_mean=nodes["gap_mean"],
            soft_contact_p=nodes.get("soft_contact_p", 0.0),
            perturb_amp=nodes["perturb_amp"],
            cluster_p_med=nodes["cluster_p_med"],
            cluster_p_abd=nodes["cluster_p_abd"],
            n_small=nodes["n_small"],
            share_10_12=nodes["share_10_12"],
            ln_offset_sd=nodes["ln_offset_sd"],
            texture_sd=nodes["texture_sd"],
            type_probs=nodes["type_probs"],
            stranding_p=nodes["stranding_p"],
            ln_mean_hu=hu["ln_mean"],
            stranding_hu=hu["stranding"],
        )


def sample_enlarged_count(rng: np.random.Generator, region: str) -> int:
    """1 + NegBin(mean, k): MED mean 4.3, ABD mean 6.9 (spec §4.1)."""
    mean, k = COUNT_PARAMS[region]
    return 1 + int(rng.negative_binomial(k, k / (k + mean)))


def enlarged_threshold(region: str) -> float:
    """Measured short axis (mm) from which a node of ``region`` is ground truth (the collection's rule)."""
    return rule_for(region).positive_min_mm


def _abd_cdf(x: float) -> float:
    d = SIZES["abdominal"]
    return float(np.interp(x, d.sad_mm, d.levels))


def sample_enlarged_sad(
    rng: np.random.Generator, share_10_12: float = 0.2, region: str = "mediastinal"
) -> float:
    """An enlarged (ground-truth) short axis, steered by the difficulty's share of the smallest ones.

    Mediastinal: 10 mm + Gamma(1.5, 4 mm), cap 45 mm; ``share_10_12`` sets the share of 10–12 mm nodes.
    Abdominal: the marked abdominal SAD distribution of the collection (``truthrule.SIZES``) above its
    positive threshold t = 7.5 mm, cap 45 mm; ``share_10_12`` sets the share of t … t + 2 mm nodes the same way.
    """
    if region == "abdominal":
        t = enlarged_threshold(region)
        lo, lo2 = _abd_cdf(t), _abd_cdf(t + 2.0)
        base = (lo2 - lo) / (1.0 - lo)  # share of t … t + 2 mm under the marks (≈ 0.13)
        if share_10_12 > base and rng.random() < (share_10_12 - base) / (1 - base):
            return float(rng.uniform(t, t + 2.0))
        while True:
            s = SIZES["abdominal"].sample(rng, lo=t, hi=45.0)
            if s < t + 2.0 and share_10_12 < base and rng.random() > share_10_12 / base:
                continue
            return s
    base = 0.2  # share of 10–12 mm under the default Gamma (P(Gamma(1.5, 4) < 2) ≈ 0.199)
    if share_10_12 > base and rng.random() < (share_10_12 - base) / (1 - base):
        return float(rng.uniform(10.0, 12.0))
    while True:
        s = 10.0 + float(rng.gamma(1.5, 4.0))
        if s > 45.0:
            continue
        if s < 12.0 and share_10_12 < base and rng.random() > share_10_12 / base:
            continue
        return s


def sample_small_sad(rng: np.random.Generator, region: str = "mediastinal") -> float:
    """Lognormal, median 5 mm, σlog 0.35, clipped to 2.5 mm … just below the region's enlarged threshold."""
    return float(np.clip(5.0 * np.exp(0.35 * rng.normal()), 2.5, enlarged_threshold(region) - 0.1))


def sample_ratio(rng: np.random.Generator, enlarged: bool) -> float:
    """In-plane long/short ratio: enlarged 1 + Gamma(2, 0.12); small 1.3 + Gamma(2, 0.2)."""
    return float(1.0 + rng.gamma(2.0, 0.12)) if enlarged else float(1.3 + rng.gamma(2.0, 0.2))


def sample_type(rng: np.random.Generator, enlarged: bool, probs: Mapping[str, float]) -> str:
    """A node's internal type: sub-threshold nodes are solid or have a fatty hilum (even odds); enlarged ones
    follow ``probs`` (negative entries count as 0)."""
    if not enlarged:
        return "solid" if rng.random() < 0.5 else "fatty_hilum"
    names = sorted(probs)
    pr = np.array([max(0.0, probs[n]) for n in names])
    return str(names[int(rng.choice(len(names), p=pr / pr.sum()))])

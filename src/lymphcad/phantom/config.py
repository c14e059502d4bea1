"""Presets, the difficulty knob (spec §6.9) and per-case parameter sampling (spec §6.8).

Every sampled value ends up in ``extra/<case>_case.json``; nothing random happens outside the case's
own generator, which is seeded from ``(seed, case_index)`` so a resumed run is byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

GENERATOR_VERSION: Final = "1.0"
REGION_CHOICES: Final = ("mediastinal", "abdominal", "both")

#: CAP frame landmarks (frame z in mm; carina at 0)
Z_CARINA: Final = 0.0
Z_DOME: Final = -115.0
Z_L2: Final = -235.0
Z_BIFURCATION: Final = -295.0


@dataclass(frozen=True)
class Preset:
    """Grid rules of a preset."""

    name: str
    fixed_shape: tuple[int, int, int] | None  # (z, y, x) or None
    fixed_spacing: tuple[float, float, float] | None  # (z, y, x) or None
    inplane: int = 512


PRESETS: Final = {
    "tiny": Preset("tiny", (64, 128, 128), (2.0, 1.6, 1.6)),
    "bench": Preset("bench", None, None),
    "full": Preset("full", None, None),
}


def lerp3(d: float, v0: float, v5: float, v1: float) -> float:
    """Piecewise-linear interpolation through (0, v0), (0.5, v5), (1, v1)."""
    d = float(np.clip(d, 0.0, 1.0))
    if d <= 0.5:
        return v0 + (v5 - v0) * (d / 0.5)
    return v5 + (v1 - v5) * ((d - 0.5) / 0.5)


def case_rng(seed: int, case_index: int) -> np.random.Generator:
    """The case's own generator: independent of other cases and of how many cases a run makes."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(case_index), 0x1F2A]))


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def case_region(region: str, case_index: int) -> str:
    """The region of case ``case_index`` (``both`` alternates, mediastinal first)."""
    if region == "both":
        return "mediastinal" if case_index % 2 == 0 else "abdominal"
    return region


def sample_case_params(
    rng: np.random.Generator,
    *,
    seed: int,
    case_index: int,
    region: str,
    difficulty: float,
    preset: str,
    annotation_fraction: float = 1.0,
) -> dict[str, Any]:
    """Draw every per-case parameter (spec §6.8/§6.9); returns a JSON-ready dict."""
    d = float(np.clip(difficulty, 0.0, 1.0))
    p: dict[str, Any] = {
        "generator": f"lymphcad.phantom {GENERATOR_VERSION}",
        "seed": int(seed),
        "case_index": int(case_index),
        "region": region,
        "difficulty": d,
        "preset": preset,
        "annotation_fraction": float(annotation_fraction),
    }
    # -- body habitus -------------------------------------------------------------------------
    visceral = float(np.clip(lerp3(d, 0.9, 0.5, 0.15) + rng.normal(0, 0.08), 0.05, 1.0))
    half_lr = _u(rng, 150, 185) + 15 * (visceral - 0.5)
    half_ap = _u(rng, 105, 135) + 10 * (visceral - 0.5)
    p["body"] = {
        "half_lr": half_lr,
        "half_ap": half_ap,
        "exponent": _u(rng, 2.0, 2.5),
        "skin_mm": 2.0,
        "subcut_fat_mm": float(np.clip(5 + 40 * visceral * _u(rng, 0.6, 1.2), 4, 45)),
        "muscle_mm": _u(rng, 4, 9),
        "visceral_fat": visceral,
        "z_wobble": _u(rng, 0.03, 0.08),
        "arms_down": bool(rng.random() < 0.1 * lerp3(d, 0, 1, 2)),
    }
    # -- grid ---------------------------------------------------------------------------------
    thick_choices = [1.0] if d < 0.25 else ([1.0, 1.25] if d < 0.75 else [1.25])
    thickness = float(rng.choice(thick_choices))
    if preset == "tiny":
        spacing = (2.0, 1.6, 1.6)
        shape = (64, 128, 128)
        thickness = 2.0
    else:
        fov = 2 * half_lr + _u(rng, 30, 90)
        px = float(np.clip(fov / 512.0, 0.68, 0.98))
        nz = (240 if region == "mediastinal" else 320) if preset == "bench" else int(rng.integers(500, 701))
        shape = (nz, 512, 512)
        spacing = (thickness, px, px)
    extent_z = shape[0] * spacing[0]
    if preset == "full":
        top = 150.0 + _u(rng, -20, 20)
        z_first = top - extent_z
    elif region == "mediastinal":
        centre = -15.0 + _u(rng, -10, 10) if preset != "tiny" else 5.0 + _u(rng, -8, 8)
        z_first = centre - extent_z / 2
    else:
        centre = -275.0 + _u(rng, -10, 10) if preset != "tiny" else -215.0 + _u(rng, -10, 10)
        z_first = centre - extent_z / 2
    cx = _u(rng, -6, 6)
    cy = _u(rng, -6, 6) + (10.0 if preset == "tiny" else 0.0)
    first_xyz = (
        cx - spacing[2] * (shape[2] - 1) / 2,
        cy - spacing[1] * (shape[1] - 1) / 2,
        z_first + spacing[0] / 2,
    )
    p["grid"] = {
        "shape_zyx": list(shape),
        "spacing_zyx": list(spacing),
        "frame_first_xyz": list(first_xyz),
        "world_shift_xyz": [
            round(_u(rng, -20, 20), 3),
            round(_u(rng, -20, 20), 3),
            round(_u(rng, -400, 100), 3),
        ],
    }
    # -- imaging ------------------------------------------------------------------------------
    noise_1mm = float(np.clip(lerp3(d, 10, 20, 32) * _u(rng, 0.85, 1.15), 8, 36))
    noise_sd = noise_1mm / np.sqrt(spacing[0] / 1.0)  # sigma ∝ 1/sqrt(thickness)
    p["imaging"] = {
        "noise_sd_1mm": noise_1mm,
        "noise_sd": float(noise_sd),
        "nps_peak": _u(rng, 0.24, 0.32),
        "nps_floor": 0.05,
        "psf_xy": float(lerp3(d, 0.45, 0.55, 0.65) + rng.normal(0, 0.02)),
        "psf_z": float(np.clip(lerp3(d, 0.2, 0.25, 0.35) + rng.normal(0, 0.03), 0.15, 0.4)),
        "slice_thickness": float(spacing[0]),
        "z_rho": _u(rng, 0.1, 0.3),
        "size_noise_gain": 0.25,
    }
    # -- contrast / intensities ----------------------------------------------------------------
    tau = _u(rng, 0.85, 1.15)
    lag = float(np.clip(lerp3(d, 1.0, 0.8, 0.6) + rng.normal(0, 0.05), 0.55, 1.0))
    small_vein = float(lerp3(d, 160, 110, 80) + rng.normal(0, 8))
    # node vs soft-tissue neighbours (§6.9: ΔHU ≥ 25 / 10–15 / 0–5): the node stays near the spec's 60 HU
    # and the neighbours close in, so the node-likeness gap (nodes vs muscle, esophagus, crura, collapsed
    # bowel) shrinks monotonically with d — moving the node from 80 towards 60 HU instead would make nodes
    # *more* node-like as d rises, a non-monotone knob for any detector tuned to soft tissue.
    ln_mean = float(lerp3(d, 62, 61, 58) + rng.normal(0, 3))
    soft_nb = float(lerp3(d, 35, 50, 56) + rng.normal(0, 3))

    def enh(base: float, unenh: float) -> float:
        return unenh + tau * (base - unenh)

    oral = str(
        rng.choice(["positive", "neutral", "none"], p=[0.5, 0.3, 0.2] if d <= 0.5 else [0.35, 0.35, 0.3])
    )
    p["hu"] = {
        "air": -1000.0,
        "lung": _u(rng, -880, -820),
        "fat": _u(rng, -115, -90) + 15 * (0.5 - visceral),
        "fat_subcut": _u(rng, -115, -95),
        "muscle": soft_nb,
        "skin": 30.0,
        "liver": enh(_u(rng, 95, 125), 55),
        "spleen": enh(_u(rng, 100, 125), 45),
        "pancreas": enh(_u(rng, 90, 115), 40),
        "kidney_cortex": enh(_u(rng, 150, 200), 30),
        "kidney_medulla": enh(_u(rng, 120, 170), 30),
        "urine": _u(rng, 5, 20),
        "ureter": _u(rng, 25, 45),
        "adrenal": soft_nb + _u(rng, -3, 8),
        "artery": enh(_u(rng, 150, 200), 40),
        "pulm_artery": enh(_u(rng, 140, 190), 40),
        "heart_blood": enh(_u(rng, 140, 180), 40),
        "myocardium": enh(_u(rng, 95, 125), 45),
        "portal": enh(_u(rng, 150, 190), 40),
        "ivc_supra": enh(_u(rng, 130, 170), 40),
        "ivc_infra": 40 + lag * (enh(_u(rng, 110, 150), 40) - 40),
        "svc": enh(_u(rng, 140, 190), 40),
        "azygos": small_vein + _u(rng, -5, 10),
        "small_vein": small_vein,
        "esophagus": soft_nb + _u(rng, -4, 4),
        "airway_wall": _u(rng, 30, 55),
        "bowel_wall": enh(_u(rng, 80, 110), 40),
        "bowel_collapsed": soft_nb + _u(rng, 0, 12),
        "bowel_fluid": _u(rng, 5, 20),
        "bowel_positive": _u(rng, 180, 400),
        "stool": -150.0,
        "fluid": _u(rng, 8, 25),
        "thymus": _u(rng, -80, -20),
        "csf": _u(rng, 5, 15),
        "cortical_bone": _u(rng, 800, 1200),
        "trabecular_bone": _u(rng, 150, 280),
        "disc": _u(rng, 75, 100),
        "lung_vessel": enh(_u(rng, 120, 170), 40),
        "crus": soft_nb + _u(rng, -4, 4),
        "stranding": _u(rng, -60, -30),
        "ln_mean": ln_mean,
    }
    p["contrast"] = {"tau": tau, "venous_lag": lag, "oral": oral}
    p["bowel"] = {
        "collapsed_fraction": float(np.clip(lerp3(d, 0.1, 0.3, 0.8) + rng.normal(0, 0.05), 0.05, 0.9)),
        "n_small_bowel": int(rng.integers(7, 13) + round(6 * (1 - visceral))),
    }
    mimic = lerp3(d, 0.3, 1.0, 1.6)
    p["mimics"] = {
        "density": mimic,
        "recess": bool(rng.random() < min(1.0, 0.3 * mimic * 1.5)),
        "n_mesenteric_veins": round(rng.integers(8, 14) * mimic),
        "n_lung_vessels": int(rng.integers(24, 36)),
    }
    # -- nodes --------------------------------------------------------------------------------
    het = lerp3(d, 0.05, 0.23, 0.40)
    # split heterogeneous share necrotic : hilum : hyper : calcified = 10 : 8 : 5 : 2 (spec defaults)
    probs = {
        "necrotic": het * 10 / 23,
        "fatty_hilum": het * 8 / 23,
        "hyper": het * 5 / 23 * 0.8,
        "calcified": 0.02 * lerp3(d, 0.5, 1, 2),
    }
    probs["solid"] = 1.0 - sum(probs.values())
    p["nodes"] = {
        "gap_mean": float(lerp3(d, 5.0, 2.0, 0.5)),
        # share of nodes pushed against the nearest soft-tissue structure (esophagus, crura, muscle,
        # collapsed bowel, poorly enhanced veins, ...): spec §3 "difficulty comes from what the node touches"
        "soft_contact_p": float(lerp3(d, 0.05, 0.5, 0.8)),
        "perturb_amp": float(lerp3(d, 0.05, 0.10, 0.20)),
        "cluster_p_med": float(lerp3(d, 0.05, 0.20, 0.45)),
        "cluster_p_abd": float(lerp3(d, 0.05, 0.30, 0.45)),
        "n_small": round(lerp3(d, 5, 28, 45) * _u(rng, 0.75, 1.25)),
        "share_10_12": float(lerp3(d, 0.10, 0.20, 0.40)),
        "ln_offset_sd": 6.0,
        "texture_sd": _u(rng, 6, 8),
        "type_probs": probs,
        "stranding_p": 0.1,
    }
    amult = lerp3(d, 0.0, 1.0, 2.0)
    p["artifacts"] = {
        "multiplier": amult,
        "streaks_shoulder": bool(rng.random() < 0.5 * amult),
        "streaks_pelvis": bool(rng.random() < 0.4 * amult),
        "beam_hardening": bool(rng.random() < 0.3 * amult),
        "dense_venous": bool(rng.random() < 0.15 * amult),
        "metal": bool(rng.random() < 0.05 * amult),
        "ivc_mixing": bool(rng.random() < 0.3 * amult),
    }
    return p

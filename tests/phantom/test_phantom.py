"""Phantom generator: determinism, cohort contract, samplers, image formation, tissue HU (spec §6.11.1–3)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import ndimage

from lymphcad.cohort import open_cohort
from lymphcad.phantom import generate_case, generate_cohort, imaging
from lymphcad.phantom.config import case_rng, sample_case_params
from lymphcad.phantom.nodes import (
    sample_enlarged_count,
    sample_enlarged_sad,
    sample_ratio,
    sample_small_sad,
)
from lymphcad.phantom.tissue import T
from lymphcad.phantom.truthrule import RULES
from png_checks import GREEN, pixels_of, read_png


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ph") / "c"
    generate_cohort(out, 4, "both", seed=11, difficulty=0.5, preset="tiny")
    return out


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_resumable_and_parallel(tiny_cohort: Path, tmp_path: Path) -> None:
    ref = _tree(tiny_cohort)
    again = tmp_path / "again"
    generate_cohort(again, 4, "both", seed=11, difficulty=0.5, preset="tiny", workers=2)
    assert _tree(again) == ref
    (again / "images" / "phantom_0002.nii.gz").unlink()  # interrupted run: resume
    generate_cohort(again, 4, "both", seed=11, difficulty=0.5, preset="tiny")
    assert _tree(again) == ref
    other = tmp_path / "other"
    generate_cohort(other, 1, "both", seed=12, difficulty=0.5, preset="tiny")
    assert _tree(other)["images/phantom_0000.nii.gz"] != ref["images/phantom_0000.nii.gz"]


def test_cohort_contract(tiny_cohort: Path) -> None:
    c = open_cohort(tiny_cohort)
    assert c.cases == [f"phantom_{i:04d}" for i in range(4)]
    assert [c.region_of(x) for x in c.cases] == ["mediastinal", "abdominal", "mediastinal", "abdominal"]
    assert c.info.source == "synthetic phantom v1, seed 11"
    assert "CC0" in c.info.license and c.info.citation
    n_total = 0
    for case in c.cases:
        lab, geom = c.read_label(case)  # type: ignore[misc]
        ids = sorted(int(v) for v in np.unique(lab) if v)
        anns = c.annotations_for(case)
        assert ids == list(range(1, len(ids) + 1)), "instance ids consecutive"
        assert [a.node_id for a in anns] == ids and all(a.label_id == a.node_id for a in anns)
        ev, _ = c.read_eval_region(case)  # type: ignore[misc]
        for a in anns:
            n_total += 1
            k, j, i = geom.world_to_voxel_zyx(a.center_xyz)
            assert lab[k, j, i] == a.node_id, "centre lies inside its own instance"
            assert ev[k, j, i] == 1
            assert a.region == c.region_of(case)
            m = lab == a.node_id
            lad, sad = _recist_bruteforce(m, geom.spacing_zyx)
            px = max(geom.spacing_zyx[1:])
            assert abs(lad - a.long_axis_mm) <= px + 1e-6  # type: ignore[operator]
            assert abs(sad - a.short_axis_mm) <= px + 1e-6  # type: ignore[operator]
            # ground truth by the collection's rule of the region (abdomen from 7.5 mm, mediastinum from 10 mm)
            assert a.short_axis_mm >= RULES[a.region].positive_min_mm  # type: ignore[operator,index]
    assert n_total >= 4
    for sub in (
        "full_annotations.csv",
        "ignore_non_gt.csv",
        "phantom_0000_nodes.csv",
        "phantom_0000_mimics.csv",
        "phantom_0000_case.json",
        "phantom_0000_tissue.nii.gz",
        "phantom_0000_all_nodes.nii.gz",
    ):
        assert (tiny_cohort / "extra" / sub).is_file(), sub


def _recist_bruteforce(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[float, float]:
    """Independent RECIST: all pixel pairs on each slice; width perpendicular to the longest diameter."""
    _, dy, dx = spacing
    best = (0.0, 0.0)
    for k in np.nonzero(mask.any(axis=(1, 2)))[0]:
        ys, xs = np.nonzero(mask[k])
        p = np.stack([xs * dx, ys * dy], 1).astype(float)
        d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1))
        a, b = np.unravel_index(int(np.argmax(d)), d.shape)
        lad = float(d[a, b]) + 0.5 * (dx + dy)
        if lad > best[0]:
            v = p[b] - p[a]
            n = np.array([-v[1], v[0]]) / max(np.linalg.norm(v), 1e-9)
            proj = p @ n
            best = (lad, float(proj.max() - proj.min()) + 0.5 * (dx + dy))
    return best


def test_no_node_overlaps_other_structures() -> None:
    case = generate_case(5, 1, "abdominal", 0.5, "tiny")
    nodes = case.all_nodes > 0
    assert nodes.any()
    assert np.all(np.isin(case.tissue[nodes], [T.NODE, T.NODE_SMALL]))
    # labels follow the measured SAD; GT instances are a subset of enlarged nodes
    for r in case.nodes:
        assert r.enlarged == (r.sad >= RULES[r.region].positive_min_mm)
        assert r.truth == RULES[r.region].classify(r.sad).value
    assert (case.labels > 0).sum() <= (case.tissue == T.NODE).sum()


def test_drawn_enlarged_nodes_stay_enlarged() -> None:
    """§6.11.3: a node drawn as enlarged is never molded or perturbed below its region's ground-truth threshold
    (10 mm mediastinal, 7.5 mm abdominal), and a sub-threshold node never measures above it (it is shrunk instead), so GT counts are the drawn counts (§6.11.4);
    an unmolded enlarged node measures its drawn SAD (the RECIST SAD of an oblique node is corrected)."""
    drawn = small = 0
    diffs: list[float] = []
    for idx in (0, 1):
        case = generate_case(21, idx, "both", 0.75, "tiny")
        for r in case.nodes:
            thr = RULES[r.region].positive_min_mm
            if r.drawn_sad >= thr:
                drawn += 1
                assert r.sad >= thr, (r.drawn_sad, r.sad, r.molded)
                if not r.molded:
                    diffs.append(r.sad - r.drawn_sad)
            else:
                small += 1
                assert r.sad < thr, (r.drawn_sad, r.sad, r.molded)
        assert set(case.params["nodes"]["dropped"]) == {"enlarged", "small"}
    assert drawn > 0 and small > 0 and diffs
    assert float(np.median(np.abs(diffs))) <= 0.3, diffs
    assert abs(float(np.mean(diffs))) <= 0.5, diffs


def _mean_param(d: float, get: Any, n: int = 40) -> float:
    vals = []
    for i in range(n):
        p = sample_case_params(
            case_rng(3, i), seed=3, case_index=i, region="abdominal", difficulty=d, preset="tiny"
        )
        vals.append(float(get(p)))
    return float(np.mean(vals))


@pytest.mark.parametrize(
    ("name", "get", "sign"),
    [
        ("noise", lambda p: p["imaging"]["noise_sd_1mm"], 1),
        ("psf", lambda p: p["imaging"]["psf_xy"], 1),
        ("visceral fat", lambda p: p["body"]["visceral_fat"], -1),
        ("gap", lambda p: p["nodes"]["gap_mean"], -1),
        ("node - soft tissue HU", lambda p: p["hu"]["ln_mean"] - p["hu"]["muscle"], -1),
        ("node HU off 60", lambda p: abs(p["hu"]["ln_mean"] - 60.0), 0),
        ("small veins", lambda p: p["hu"]["small_vein"], -1),
        ("collapsed bowel", lambda p: p["bowel"]["collapsed_fraction"], 1),
        ("mimic density", lambda p: p["mimics"]["density"], 1),
        ("small nodes", lambda p: p["nodes"]["n_small"], 1),
        ("10-12 mm share", lambda p: p["nodes"]["share_10_12"], 1),
        ("perturbation", lambda p: p["nodes"]["perturb_amp"], 1),
        ("cluster p", lambda p: p["nodes"]["cluster_p_abd"], 1),
        ("soft contact", lambda p: p["nodes"]["soft_contact_p"], 1),
        ("heterogeneous", lambda p: 1 - p["nodes"]["type_probs"]["solid"], 1),
        ("artifacts", lambda p: p["artifacts"]["multiplier"], 1),
    ],
)
def test_difficulty_parameters_are_monotone(name: str, get: Any, sign: int) -> None:
    """Every difficulty-driven parameter moves one way as d rises (§6.9), averaged over 40 cases."""
    m = [_mean_param(d, get) for d in (0.0, 0.25, 0.5, 0.75, 1.0)]
    if sign == 0:  # the node's own HU stays near the spec's 60 HU: never drifts towards the detector's peak
        assert max(m) < 6.0, (name, m)
    else:
        assert all(sign * (b - a) > 0 for a, b in itertools.pairwise(m)), (name, m)


# -- samplers (thousands of draws, 3 standard errors) ---------------------------------------------
@pytest.mark.parametrize(("region", "mean"), [("mediastinal", 4.3), ("abdominal", 6.9)])
def test_enlarged_count_sampler(region: str, mean: float) -> None:
    rng = np.random.default_rng(0)
    x = np.array([sample_enlarged_count(rng, region) for _ in range(6000)])
    assert abs(x.mean() - mean) < 3 * x.std() / np.sqrt(len(x))
    assert x.min() >= 1


def test_size_samplers() -> None:
    rng = np.random.default_rng(1)
    s = np.array([sample_enlarged_sad(rng) for _ in range(8000)])
    se = s.std() / np.sqrt(len(s))
    assert abs(s.mean() - 16.0) < 3 * se + 0.05  # cap at 45 mm trims the mean by ~0.01 mm
    share = np.mean(s < 12.0)
    assert abs(share - 0.199) < 3 * np.sqrt(0.2 * 0.8 / len(s))
    assert s.min() >= 10.0 and s.max() <= 45.0
    hard = np.array([sample_enlarged_sad(rng, 0.4) for _ in range(8000)])
    assert abs(np.mean(hard < 12.0) - 0.4) < 3 * np.sqrt(0.24 / len(hard))
    small = np.array([sample_small_sad(rng) for _ in range(8000)])
    assert abs(np.median(small) - 5.0) < 0.1 and small.min() >= 2.5 and small.max() <= 9.9
    # abdomen: the collection's marked sizes above 7.5 mm (median 12.6 mm), small nodes below 7.5 mm
    abd = np.array([sample_enlarged_sad(rng, 0.13, "abdominal") for _ in range(8000)])
    assert abd.min() >= 7.5 and abs(float(np.median(abd)) - 12.7) < 0.4
    assert 0.1 < np.mean(abd < 10.0) < 0.3
    assert max(sample_small_sad(rng, "abdominal") for _ in range(4000)) < 7.5
    r = np.array([sample_ratio(rng, True) for _ in range(8000)])
    assert abs(r.mean() - 1.24) < 3 * r.std() / np.sqrt(len(r))


# -- image formation --------------------------------------------------------------------------------
def _nps_peak(noise: np.ndarray, spacing: float) -> float:
    f = np.fft.fftfreq(noise.shape[1], spacing)
    ps = (np.abs(np.fft.fft2(noise, axes=(1, 2))) ** 2).mean(0)
    fr = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    bins = np.linspace(0, fr.max(), 60)
    idx = np.digitize(fr.ravel(), bins)
    radial = np.array([ps.ravel()[idx == b].mean() if np.any(idx == b) else 0 for b in range(1, len(bins))])
    centres = 0.5 * (bins[1:] + bins[:-1])
    sm = np.convolve(radial, np.ones(3) / 3, mode="same")
    return float(centres[int(np.argmax(sm))])


@pytest.mark.parametrize("peak", [0.22, 0.28, 0.34])
def test_noise_sd_and_texture(peak: float) -> None:
    rng = np.random.default_rng(2)
    vol = np.zeros((24, 256, 256), np.float32)
    body = np.ones(vol.shape, bool)
    imaging.add_noise(vol, rng, body, (1.0, 0.8, 0.8), 20.0, peak, 0.2)
    assert abs(vol.std() - 20.0) < 2.0  # ±10 %
    assert abs(_nps_peak(vol, 0.8) - peak) < 0.05
    rho = np.corrcoef(vol[:-1].ravel(), vol[1:].ravel())[0, 1]
    assert abs(rho - 0.2) < 0.05


def test_psf_edge_fwhm() -> None:
    sp = 0.1
    vol = np.zeros((3, 8, 400), np.float32)
    vol[..., 200:] = 100.0
    out = imaging.blur(vol, (1.0, sp, sp), 0.55, 0.0)
    esf = out[1, 4]
    lsf = np.diff(esf)
    half = lsf.max() / 2
    above = np.nonzero(lsf >= half)[0]
    fwhm = (above[-1] - above[0] + 1) * sp
    assert abs(fwhm - 2.3548 * 0.55) < 0.1 * 2.3548 * 0.55


def test_tissue_means_match_drawn_values() -> None:
    case = generate_case(3, 1, "abdominal", 0.5, "tiny")
    hu = case.params["hu"]
    img = case.image.astype(float)
    checks = {T.LIVER: hu["liver"], T.FAT_VISC: hu["fat"], T.MUSCLE: hu["muscle"]}
    for tid, want in checks.items():
        m = ndimage.binary_erosion(case.tissue == tid, iterations=2)
        if m.sum() < 200:
            continue
        assert abs(img[m].mean() - want) < 3.0, (tid, img[m].mean(), want)
    # noise: high-pass SD in eroded visceral fat ≈ σ(x, y) (0.75–1.25 σ0) plus the fat's own texture (≤ 10 HU)
    m = ndimage.binary_erosion(case.tissue == T.FAT_VISC, iterations=2)
    res = img - ndimage.uniform_filter(img, (1, 5, 5))
    sd = res[m].std() / np.sqrt(1 - 1 / 25)
    s0 = case.params["imaging"]["noise_sd"]
    assert 0.75 * s0 < sd < np.hypot(1.3 * s0, 10.0)


def test_case_seeds_independent_of_count() -> None:
    a = case_rng(7, 3).random(4)
    b = case_rng(7, 3).random(4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, case_rng(7, 4).random(4))


def test_cli_phantom_and_show(tmp_path: Path) -> None:
    from lymphcad.cli import main

    out = tmp_path / "c"
    assert (
        main(
            [
                "phantom",
                "--out",
                str(out),
                "--cases",
                "1",
                "--preset",
                "tiny",
                "--region",
                "mediastinal",
                "--seed",
                "1",
            ]
        )
        == 0
    )
    png = tmp_path / "x.png"
    assert main(["show", str(out), "--out", str(png)]) == 0
    rgb = read_png(png)
    n_nodes = len(open_cohort(out).annotations_for("phantom_0000"))
    assert n_nodes > 0
    # one row of three panels per ground-truth node (at most 4), each node outlined in green
    assert rgb.shape == (369 * min(n_nodes, 4), 1080, 3)
    assert pixels_of(rgb, GREEN) > 20 * min(n_nodes, 4)
    assert main(["phantom", "--out", str(out), "--cases", "1", "--region", "chest"]) == 2


def test_nifti_writer_is_byte_identical_and_round_trips(tmp_path: Path) -> None:
    from lymphcad.geometry import Geometry
    from lymphcad.io.nifti import read_nifti_array
    from lymphcad.io.nifti import write_nifti as write_nifti_fast

    g = Geometry((5, 6, 7), (2.0, 0.7, 0.8), (1.0, -2.0, 3.0), np.diag([1.0, 1.0, 1.0]))
    a = np.random.default_rng(0).integers(-1000, 1000, g.shape_zyx).astype(np.int16)
    write_nifti_fast(tmp_path / "a.nii.gz", a, g)
    write_nifti_fast(tmp_path / "b.nii.gz", a, g)
    assert (tmp_path / "a.nii.gz").read_bytes() == (tmp_path / "b.nii.gz").read_bytes()
    back, g2 = read_nifti_array(tmp_path / "a.nii.gz")
    assert np.array_equal(back, a) and g2.same_grid(g)

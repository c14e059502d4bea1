"""Training on a mix for real anatomy: CT-physics augmentation, compact cases with node masks, the mask
head and its loss, hard negatives, and the mix training loop (resume is exact)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from lymphcad import atomic
from lymphcad.cohort import open_cohort
from lymphcad.detector.augment import (
    augment_intensity,
    correlated_noise,
    enhancement_remap,
    gaussian_blur3d,
    unsharp,
)
from lymphcad.detector.config import AugmentConfig, DetectorConfig, NetworkConfig
from lymphcad.detector.datamix import (
    MixSampler,
    MixSource,
    load_compact_case,
    mimic_points,
    mined_from_json,
    mined_to_json,
    node_classes,
    node_like,
)
from lymphcad.detector.model import DEFAULT_MODEL, load_model, read_payload, save_model
from lymphcad.detector.network import build_network
from lymphcad.detector.plan import Plan
from lymphcad.detector.sampling import case_to_patch, patch_points, random_displacement, random_matrix
from lymphcad.detector.synthetic import write_sphere_cohort
from lymphcad.detector.targets import seg_loss
from lymphcad.detector.train import latest_checkpoint
from lymphcad.detector.trainmix import MixSettings, sphere_peak, train_mix
from lymphcad.errors import UsageError


def test_enhancement_remap_moves_only_enhanced_tissue() -> None:
    hu = torch.tensor([-1000.0, -100.0, 40.0, 240.0, 500.0, 1200.0])
    low = enhancement_remap(hu, 0.25)
    high = enhancement_remap(hu, 2.0)
    assert torch.equal(low[:3], hu[:3]) and torch.equal(high[:3], hu[:3])  # air, fat, unenhanced blood
    assert float(low[3]) == pytest.approx(40 + 0.25 * 200) and float(high[3]) == pytest.approx(40 + 2 * 200)
    for out in (low, high):
        assert bool(torch.all(out[1:] >= out[:-1]))  # monotonic: bone stays brighter than blood
        assert float(out[5] - out[4]) == pytest.approx(700.0)  # slope 1 above the top
    with pytest.raises(ValueError):
        enhancement_remap(hu, 0.0)


def test_noise_and_kernel_augmentation() -> None:
    gen = torch.Generator().manual_seed(3)
    n = correlated_noise((1, 1, 24, 48, 48), 20.0, 1.0, gen)
    assert float(n.std()) == pytest.approx(20.0, rel=0.02)
    # correlated: neighbouring voxels agree far more than white noise does
    corr = float(torch.corrcoef(torch.stack([n[..., 1:].flatten(), n[..., :-1].flatten()]))[0, 1])
    assert corr > 0.5
    step = torch.zeros((1, 1, 8, 16, 16))
    step[..., 8:] = 100.0
    blurred, sharp = gaussian_blur3d(step, 1.0), unsharp(step, 1.0)
    assert 0 < float(blurred[0, 0, 4, 8, 7]) < 50  # an edge spreads
    assert float(sharp[0, 0, 4, 8, 8]) > 100.0  # and overshoots when sharpened


def test_slice_thickness_blurs_along_z_only_and_leaves_other_runs_alone() -> None:
    """p_thick smooths a node's z profile (a thick section) but not its in-plane edge; off, it draws nothing."""
    quiet = AugmentConfig(
        intensity_shift_hu=0.0, intensity_scale=(1.0, 1.0), noise_sd_hu=(0.0, 0.0), p_blur=0.0
    )
    node = torch.full((1, 1, 16, 24, 24), -100.0)
    node[..., 6:10, 8:16, 8:16] = 50.0  # a small node, 4 slices tall
    thick = augment_intensity(node, np.random.default_rng(0), replace(quiet, p_thick=1.0))
    centre = thick[0, 0, :, 12, 12]
    assert float(centre.max()) < 50.0 and float(centre[5]) > -100.0  # contrast lost, spread into z
    column = thick[0, 0, 8]  # in-plane: each row keeps its step at x = 8 and 16 exactly
    assert float(column[12, 7]) == pytest.approx(-100.0, abs=1e-3)
    assert float(column[12, 8]) == pytest.approx(float(column[12, 12]), abs=1e-3)
    # off: the stream is the one the runs before it drew (v5-v8 reproduce bit for bit)
    r_off, r_ref = np.random.default_rng(7), np.random.default_rng(7)
    augment_intensity(node, r_off, quiet)
    r_ref.uniform(), r_ref.random(), r_ref.uniform(), r_ref.uniform(), r_ref.random()  # phase, scale, kernel
    r_ref.uniform(), r_ref.uniform(), r_ref.uniform(), r_ref.uniform(), r_ref.integers(2**62)  # kernel, noise
    assert r_off.random() == r_ref.random()


def _mask_cohort(root: Path) -> Path:
    """A sphere cohort plus the full-truth files the phantom/insert write (node table, voxel masks)."""
    write_sphere_cohort(root, n_cases=3, shape_zyx=(32, 48, 48), nodes_per_case=2)
    cohort = open_cohort(root)
    (root / "extra").mkdir(exist_ok=True)
    for case in cohort.cases:
        shutil.copy2(root / "labels" / f"{case}.nii.gz", root / "extra" / f"{case}_all_nodes.nii.gz")
        rows = [
            [case, a.node_id, *a.center_xyz, a.short_axis_mm, a.long_axis_mm, 1]
            for a in cohort.annotations_for(case)
        ]
        atomic.write_csv(
            root / "extra" / f"{case}_nodes.csv",
            ("case_id", "id", "coordX", "coordY", "coordZ", "short_axis_mm", "long_axis_mm", "enlarged"),
            rows,
        )
    return root


@pytest.fixture(scope="module")
def mask_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _mask_cohort(tmp_path_factory.mktemp("mix") / "spheres")


def test_node_classes_follow_the_flag_and_the_size(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    atomic.write_csv(
        path,
        ("id", "coordX", "coordY", "coordZ", "short_axis_mm", "long_axis_mm", "enlarged"),
        [[1, 0, 0, 0, 12, 15, 1], [2, 5, 5, 5, 9, 11, 0], [3, 9, 9, 9, 5, 6, 0], [4, 1, 1, 1, 7, 8, 1]],
    )
    c = node_classes(path, enlarged_mm=10.0, ignore_below_mm=8.0)
    assert c.positive_ids == (1, 4)  # the flag decides (a 7 mm abdominal node may be ground truth)
    assert c.ignored_ids == (2,)
    assert c.truth.pos_diameter_mm.tolist() == [13.5, 7.5]
    ruled = tmp_path / "r.csv"  # a per-region truth column decides before the flag and the size
    atomic.write_csv(
        ruled,
        ("id", "coordX", "coordY", "coordZ", "short_axis_mm", "long_axis_mm", "enlarged", "truth"),
        [
            [1, 0, 0, 0, 12, 15, 1, "ignore"],
            [2, 5, 5, 5, 7, 9, 0, "positive"],
            [3, 9, 9, 9, 9, 9, 0, "negative"],
        ],
    )
    r = node_classes(ruled, enlarged_mm=10.0, ignore_below_mm=8.0)
    assert (r.positive_ids, r.ignored_ids) == ((2,), (1,))


def test_compact_case_and_patch_targets(mask_cohort: Path) -> None:
    cfg = DetectorConfig().updated(
        {
            "train": {"patch_zyx": [16, 24, 24], "p_positive": 1.0},
            "augment": {"flip": False, "rotate_deg": 0.0, "tilt_deg": 0.0, "scale": [1.0, 1.0]},
        }
    )
    plan = Plan(spacing_mm=2.0)
    cohort = open_cohort(mask_cohort)
    src = MixSource("spheres", mask_cohort, "insertion", background="bg")
    case = load_compact_case(cohort, "sphere_000", plan, src, cfg.train, np.random.default_rng(0))
    assert case.hu.dtype == torch.int16 and case.pos_cov is not None
    assert len(case.nodes_zyx) == 2 and case.group == "bg"
    # the positive mask's coverage peaks at each node centre
    for zyx in case.nodes_zyx:
        k, j, i = (round(float(v)) for v in zyx)
        assert int(case.pos_cov[k, j, i]) > 200
    sampler = MixSampler([case], plan, cfg.train, cfg.augment, source_weights={}, p_hard=0.0)
    batch = sampler.batch(np.random.default_rng(1), 4)
    assert batch["image"].shape == (4, 1, 16, 24, 24)
    assert batch["seg"].shape == batch["heatmap"].shape == (4, 1, 8, 12, 12)
    for b in range(4):  # every positive patch holds a centre, and the mask target covers it
        centre = batch["heatmap"][b, 0] == 1.0
        assert bool(centre.any())
        assert float(batch["seg"][b, 0][centre].max()) > 0.5
    assert float(batch["seg"].mean()) < 0.3


def test_mimic_points_lie_on_soft_tissue_beside_fat() -> None:
    hu = torch.full((30, 40, 40), -1000.0)
    hu[2:28, 4:36, 4:36] = -100.0  # fat body
    hu[10:20, 15:25, 15:25] = 50.0  # a soft-tissue structure in the fat
    pts = mimic_points(hu, 2.0, np.random.default_rng(0))
    assert len(pts) > 0
    vals = hu[tuple(torch.as_tensor(pts.T, dtype=torch.long))]
    assert bool(torch.all(vals == 50.0))


def test_node_like_tells_a_node_in_fat_from_vessel_muscle_and_fat() -> None:
    """Mining skips what may be a real node of the background: soft tissue with fat around it."""
    hu = torch.full((40, 60, 60), -100.0)  # fat, 2 mm voxels
    z, y, x = np.mgrid[:40, :60, :60]
    hu[torch.from_numpy((z - 20) ** 2 + (y - 15) ** 2 + (x - 15) ** 2 <= 9)] = 45.0  # a 12 mm node in fat
    hu[torch.from_numpy((y - 45) ** 2 + (x - 15) ** 2 <= 9)] = 250.0  # an enhanced vessel along z
    hu[5:35, 30:60, 35:60] = 50.0  # a block of muscle, no fat within 10 mm of its centre
    pts = np.array([[20.0, 15, 15], [20, 45, 15], [20, 45, 48], [20, 15, 28]])
    assert node_like(hu, pts, 2.0).tolist() == [True, False, False, False]
    # an unenhanced vessel in fat is node-like too (a round soft-tissue cross-section): it is not mined
    hu[torch.from_numpy((y - 45) ** 2 + (x - 15) ** 2 <= 9)] = 40.0
    assert bool(node_like(hu, pts[1:2], 2.0)[0])


def test_shipped_model_scores_a_plain_sphere() -> None:
    """The sanity score of the mixed-data training: the shipped model sees the 14 mm sphere in fat."""
    model = load_model(DEFAULT_MODEL)
    assert sphere_peak(model.network.float(), model.plan, model.detect) >= 0.5


def test_seg_head_and_loss() -> None:
    net = build_network(NetworkConfig(base_channels=8, blocks=(1, 1, 1), seg_head=True))
    out = net(torch.zeros((1, 1, 16, 16, 16)))
    assert out["seg"].shape == out["heatmap"].shape == (1, 1, 8, 8, 8)
    target = torch.zeros((1, 1, 8, 8, 8))
    target[..., 3:5, 3:5, 3:5] = 1.0
    good = torch.where(target > 0, 8.0, -8.0)
    bad = -good
    ignore = torch.zeros_like(target)
    assert float(seg_loss(good, target, ignore)) < 0.05 < float(seg_loss(bad, target, ignore))
    # ignored cells do not count
    assert float(seg_loss(bad, target, torch.ones_like(target))) < float(seg_loss(bad, target, ignore))
    # models without the head keep their layout (the old default model loads)
    plain = build_network(NetworkConfig(base_channels=8, blocks=(1, 1, 1))).eval()
    assert "seg" not in plain(torch.zeros((1, 1, 16, 16, 16)))


def test_mined_points_round_trip(mask_cohort: Path) -> None:
    cfg = DetectorConfig()
    cohort = open_cohort(mask_cohort)
    src = MixSource("spheres", mask_cohort, "insertion")
    case = load_compact_case(
        cohort, "sphere_001", Plan(spacing_mm=2.0), src, cfg.train, np.random.default_rng(0)
    )
    case.mined_zyx = np.array([[3.0, 4.0, 5.0], [10.0, 11.0, 12.5]])
    data = mined_to_json([case])
    case.mined_zyx = np.zeros((0, 3))
    mined_from_json([case], data)
    np.testing.assert_allclose(case.mined_zyx, [[3.0, 4.0, 5.0], [10.0, 11.0, 12.5]], atol=1e-3)


def _tiny_mix_config(epochs: int) -> DetectorConfig:
    return DetectorConfig().updated(
        {
            "network": {"base_channels": 8, "blocks": [1, 1, 1], "seg_head": True},
            "train": {
                "epochs": epochs,
                "iters_per_epoch": 2,
                "batch_size": 2,
                "patch_zyx": [16, 24, 24],
                "warmup_iters": 1,
                "val_every": 0,
                "device": "cpu",
            },
            "augment": {
                "enhancement_scale": [0.3, 2.0],
                "p_enhancement": 0.5,
                "p_sharpen": 0.3,
                "sharpen_amount": [0.3, 1.0],
                "noise_corr_sigma_vox": [0.0, 1.0],
                "p_elastic": 0.5,  # resume stays exact with the displacement's draws in the stream
            },
        }
    )


@pytest.mark.slow
def test_train_mix_resume_is_bit_identical_and_warm_start(mask_cohort: Path, tmp_path: Path) -> None:
    sources = [MixSource("a", mask_cohort, "insertion", background="bg", weight=1.0)]
    settings = MixSettings(mine_every=1, mine_start=1, val_per_source=1)
    full = train_mix(sources, out=tmp_path / "full", config=_tiny_mix_config(3), settings=settings)
    part = train_mix(
        sources, out=tmp_path / "part", config=_tiny_mix_config(3), settings=settings, stop_after_epochs=1
    )
    assert part.epochs_done == 1
    with pytest.raises(UsageError, match="resume"):
        train_mix(sources, out=tmp_path / "part", config=_tiny_mix_config(3), settings=settings)
    # an absolute stop holds across resumes: epoch 2 of the schedule, not 2 more epochs
    assert train_mix(sources, out=tmp_path / "part", resume=True, stop_at_epoch=2).epochs_done == 2
    done = train_mix(sources, out=tmp_path / "part", resume=True)
    assert done.epochs_done == 3
    a = read_payload(latest_checkpoint(full.run))  # type: ignore[arg-type]
    b = read_payload(latest_checkpoint(done.run))  # type: ignore[arg-type]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert a["mined"] == b["mined"]
    assert [r["loss_seg"] for r in full.history] == [r["loss_seg"] for r in done.history]
    model = load_model(full.run / "model")
    assert model.network.config.seg_head
    # a warm start copies the weights it can (an old model without the mask head included)
    old = build_network(NetworkConfig(base_channels=8, blocks=(1, 1, 1)))
    save_model(tmp_path / "old", old, model.plan, name="old", detect=model.detect)
    warm = train_mix(
        sources,
        out=tmp_path / "warm",
        config=_tiny_mix_config(1).updated({"train": {"val_every": 1}}),
        settings=MixSettings(mine_every=1, mine_start=0, val_per_source=1, mine_skip_node_like=True),
        init_from=tmp_path / "old",
    )
    assert warm.epochs_done == 1
    # a validated epoch records the sphere's score and keeps its weights
    assert 0.0 <= float(warm.history[0]["val_sphere_peak"]) <= 1.0
    assert load_model(warm.run / "snapshots" / "epoch_0001").network.config.seg_head


def test_elastic_displacement_is_inverted_for_the_targets() -> None:
    """A patch voxel's case position maps back to that voxel through rotation, scale and the displacement."""
    aug = AugmentConfig(p_elastic=1.0, elastic_sd_vox=1.5, elastic_grid_vox=8.0)
    rng = np.random.default_rng(3)
    patch = (16, 24, 24)
    half = (np.asarray(patch, dtype=np.float64) - 1.0) / 2.0
    matrix = random_matrix(rng, aug)
    disp = random_displacement(rng, aug, patch)
    assert disp is not None and disp.shape == (3, 3, 4, 4)
    centre = np.array([40.0, 50.0, 60.0])
    pts = patch_points(patch, half, matrix, centre, disp).numpy()
    affine = patch_points(patch, half, matrix, centre).numpy()
    assert float(np.abs(pts - affine).max()) > 1.0  # the field moves voxels by voxels, not fractions
    q = np.array([[3, 5, 7], [8, 12, 12], [15, 0, 23], [10, 20, 2]])
    back = case_to_patch(pts[tuple(q.T)], matrix, centre, half, disp)
    np.testing.assert_allclose(back, q, atol=0.05)
    # off: nothing drawn, so the run's random stream is the one it had before the option existed
    rng = np.random.default_rng(5)
    assert random_displacement(rng, AugmentConfig(), patch) is None
    assert rng.random() == np.random.default_rng(5).random()


def test_elastic_patches_keep_targets_on_the_deformed_nodes(mask_cohort: Path) -> None:
    """With the displacement on, the heatmap's centres still lie inside the resampled node masks."""
    cfg = DetectorConfig().updated(
        {
            "train": {"patch_zyx": [16, 24, 24], "p_positive": 1.0},
            "augment": {"p_elastic": 1.0, "elastic_sd_vox": 2.5, "elastic_grid_vox": 8.0},
        }
    )
    plan = Plan(spacing_mm=2.0)
    cohort = open_cohort(mask_cohort)
    src = MixSource("spheres", mask_cohort, "insertion", background="bg")
    case = load_compact_case(cohort, "sphere_000", plan, src, cfg.train, np.random.default_rng(0))
    sampler = MixSampler([case], plan, cfg.train, cfg.augment, source_weights={}, p_hard=0.0)
    batch = sampler.batch(np.random.default_rng(2), 8)
    for b in range(8):
        centre = batch["heatmap"][b, 0] == 1.0
        assert bool(centre.any())
        assert float(batch["seg"][b, 0][centre].max()) > 0.5

"""Detector units: plan/resampling geometry, targets round trip, NMS, network shapes, world-position accuracy."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lymphcad.detector.common import resolve_device
from lymphcad.detector.config import DetectConfig, DetectorConfig, NetworkConfig, dumps_config, load_config
from lymphcad.detector.infer import detect_prepared, detect_volume
from lymphcad.detector.model import LoadedModel
from lymphcad.detector.network import STRIDE, build_network
from lymphcad.detector.plan import Plan, load_plan, plan_warnings, prepare_volume, reorient, save_plan
from lymphcad.detector.synthetic import sphere_volume
from lymphcad.detector.targets import decode, encode, nms_mm, voxel_to_cell
from lymphcad.errors import InputError, UsageError
from lymphcad.geometry import CTVolume, Geometry


def _rot_z(deg: float) -> np.ndarray:
    a = math.radians(deg)
    return np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])


#: directions: identity, flipped (RAS-stored), permuted + flipped, oblique (12° about z) + flipped
DIRECTIONS = {
    "identity": np.eye(3),
    "flipped": np.diag([-1.0, -1.0, 1.0]),
    "permuted": np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]]),
    "oblique": _rot_z(12.0) @ np.diag([1.0, -1.0, -1.0]),
}


class CentroidStub(nn.Module):
    """A hand-made 'network' with the real output contract: heatmap peaks on soft tissue, exact offsets.

    The heatmap is a Gaussian-weighted soft-tissue mass; the offset is the soft-tissue centroid within a
    13-voxel box relative to each cell centre. So the detector's geometry (reorientation, resampling,
    decoding, world mapping) is tested independently of any training.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        k = 13
        r = torch.arange(k, dtype=torch.float32) - k // 2
        zz, yy, xx = torch.meshgrid(r, r, r, indexing="ij")
        g = torch.exp(-(zz**2 + yy**2 + xx**2) / (2 * 2.0**2))
        self.register_buffer("k_mass", torch.ones(1, 1, k, k, k))
        self.register_buffer("k_g", g[None, None])
        self.register_buffer("k_pos", torch.stack([zz, yy, xx])[:, None])

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        ind = torch.sigmoid((x + 0.25) * 30.0)  # soft tissue (≥ about -25 HU) vs fat
        pad = 6
        mass = F.conv3d(ind, self.k_mass, padding=pad)
        gm = F.conv3d(ind, self.k_g, padding=pad)
        pos = F.conv3d(ind, self.k_pos, padding=pad) / mass.clamp(min=1e-3)
        s = STRIDE
        gm, pos = gm[:, :, ::s, ::s, ::s], pos[:, :, ::s, ::s, ::s]
        # voxel 2c is where the centroid was measured; the cell centre sits at voxel 2c + 0.5
        offset = (pos - (s - 1) / 2.0) / s
        heat = (gm / self.k_g.sum() - 0.3) * 20.0
        return {"heatmap": heat, "size": torch.zeros_like(heat), "offset": offset}


def _stub_model(plan: Plan) -> LoadedModel:
    from pathlib import Path

    net = CentroidStub().eval()
    return LoadedModel("stub", net, plan, DetectConfig(threshold=0.5), "", Path("."), {})  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(DIRECTIONS))
def test_node_reported_at_its_world_position(name: str) -> None:
    direction = DIRECTIONS[name]
    geom = Geometry((44, 60, 56), (1.25, 0.8, 0.9), (12.0, -40.0, 300.0), direction)
    centre = geom.zyx_to_world(np.array([25.3, 31.7, 22.1]))
    vol, _ = sphere_volume(geom, [centre], [12.0], seed=3, noise_hu=5.0)
    dets = detect_volume(vol, _stub_model(Plan()), DetectConfig(threshold=0.5, max_detections=5), case_id="c")
    assert dets, "the stub found nothing"
    best = dets[0]
    err = float(np.linalg.norm(np.asarray(best.center_xyz) - centre))
    assert err <= 2.0, f"{name}: reported {best.center_xyz}, truth {centre.tolist()}, error {err:.2f} mm"
    assert best.case_id == "c"


def test_reorient_is_lossless_and_keeps_world_positions() -> None:
    geom = Geometry((5, 6, 7), (2.0, 0.7, 0.9), (1.0, 2.0, 3.0), DIRECTIONS["permuted"])
    arr = np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7)
    vol = CTVolume(arr, geom)
    canon = reorient(vol)
    assert canon.geometry.orientation_codes() == "LPS"
    assert sorted(canon.array.ravel().tolist()) == sorted(arr.ravel().tolist())
    # the voxel holding value v sits at the same world point before and after
    for v in (0, 17, 209):
        a = np.argwhere(arr == v)[0].astype(float)
        b = np.argwhere(canon.array == v)[0].astype(float)
        np.testing.assert_allclose(geom.zyx_to_world(a), canon.geometry.zyx_to_world(b), atol=1e-9)


def test_prepare_volume_grid() -> None:
    geom = Geometry((30, 64, 64), (1.25, 0.7, 0.7), (0.0, 0.0, 0.0))
    vol = CTVolume(np.zeros(geom.shape_zyx, dtype=np.int16), geom)
    prep = prepare_volume(vol, Plan(spacing_mm=2.0))
    assert prep.geometry.spacing_zyx == pytest.approx((2.0, 2.0, 2.0))
    assert prep.hu.dtype == torch.float32
    assert tuple(prep.hu.shape) == prep.geometry.shape_zyx
    # the resampled grid lies within the original extent
    lo, hi = geom.world_bounds()
    plo, phi = prep.geometry.world_bounds()
    assert np.all(plo >= lo - 1e-6) and np.all(phi <= hi + 1e-6)


def test_encode_decode_round_trip() -> None:
    spacing = 2.0
    out_shape = (16, 20, 24)
    centers = np.array([[10.3, 12.9, 30.2], [20.0, 25.5, 8.7]])  # input voxels (z, y, x)
    diams = np.array([11.0, 17.5])
    t = encode(centers, diams, out_shape, spacing_mm=spacing)
    assert t.heatmap.shape == (1, *out_shape) and t.offset.shape == (3, *out_shape)
    assert t.heatmap.max() == pytest.approx(1.0)
    assert int((t.heatmap >= 1.0).sum()) == 2
    peaks = decode(
        torch.from_numpy(t.heatmap[0]),
        torch.from_numpy(t.size[0]),
        torch.from_numpy(t.offset),
        threshold=0.9,
        max_peaks=10,
    )
    order = np.argsort(peaks.zyx[:, 0])
    np.testing.assert_allclose(peaks.zyx[order], centers, atol=1e-5)
    np.testing.assert_allclose(peaks.diameter_mm[order], diams, rtol=1e-5)


def test_encode_ignore_and_border() -> None:
    t = encode(
        np.array([[-30.0, 5.0, 5.0]]),  # centre far outside: nothing painted, no regression
        np.array([12.0]),
        (8, 8, 8),
        spacing_mm=2.0,
        ignore_zyx=np.array([[8.0, 8.0, 8.0]]),
        ignore_radius_mm=np.array([5.0]),
    )
    assert t.heatmap.max() == 0.0 and t.reg_mask.sum() == 0.0
    u = voxel_to_cell(np.array([8.0, 8.0, 8.0]))
    assert t.ignore[0, round(u[0]), round(u[1]), round(u[2])] == 1.0


def test_nms_mm() -> None:
    pts = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, 0.0], [20.0, 0.0, 0.0], [26.0, 0.0, 0.0]])
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    diam = np.array([10.0, 10.0, 10.0, 30.0])
    keep = nms_mm(pts, scores, diam, min_dist_mm=5.0, diameter_factor=0.5)
    # 3 (best, d=30 → radius 15) suppresses 2 (6 mm away); 0 suppresses 1 (3 mm)
    assert keep.tolist() == [3, 0]


def test_network_shapes_and_prior() -> None:
    net = build_network(NetworkConfig(base_channels=8, blocks=(1, 1, 1))).eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 1, 16, 24, 32))
    assert out["heatmap"].shape == (1, 1, 8, 12, 16)
    assert out["offset"].shape == (1, 3, 8, 12, 16)
    assert float(torch.sigmoid(out["heatmap"]).max()) < 0.05  # starts near the 1 % prior
    with pytest.raises(ValueError, match="multiple of 8"):
        net(torch.zeros(1, 1, 12, 24, 32))


def test_untrained_network_reports_nothing_on_empty_volume() -> None:
    geom = Geometry((32, 40, 40), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    vol, _ = sphere_volume(geom, np.zeros((0, 3)), [], seed=1)
    net = build_network(NetworkConfig(base_channels=8, blocks=(1, 1, 1))).eval()
    prep = prepare_volume(vol, Plan())
    assert detect_prepared(prep, net, Plan(), DetectConfig(threshold=0.05), case_id="e") == []


def test_plan_json_round_trip_and_errors(tmp_path: object) -> None:
    from pathlib import Path

    d = Path(str(tmp_path))
    plan = Plan(spacing_mm=1.5, enhanced_fraction_range=(0.02, 0.05), n_cases=3, source="x")
    save_plan(d / "plan.json", plan)
    assert load_plan(d / "plan.json") == plan
    (d / "bad.json").write_text('{"version": 1}', encoding="utf-8")
    with pytest.raises(InputError, match="malformed plan"):
        load_plan(d / "bad.json")


def test_plan_warnings() -> None:
    plan = Plan(
        slice_spacing_range=(1.0, 1.25),
        inplane_spacing_range=(0.7, 0.9),
        enhanced_fraction_range=(0.05, 0.08),
    )
    geom = Geometry((10, 32, 32), (5.0, 0.8, 0.8), (0.0, 0.0, 0.0))
    unenhanced = CTVolume(np.full(geom.shape_zyx, 40, dtype=np.int16), geom)
    warnings = plan_warnings(unenhanced, plan)
    assert any("slice spacing" in w for w in warnings)
    assert any("contrast" in w for w in warnings)


def test_config_toml_round_trip_and_unknown_key(tmp_path: object) -> None:
    from pathlib import Path

    d = Path(str(tmp_path))
    cfg = DetectorConfig().updated({"train": {"epochs": 3, "patch_zyx": [32, 48, 48]}})
    (d / "c.toml").write_text(dumps_config(cfg), encoding="utf-8")
    again = load_config(d / "c.toml")
    assert again == cfg
    (d / "bad.toml").write_text("[train]\nepohcs = 3\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"unknown config key train\.epohcs"):
        load_config(d / "bad.toml")


def test_config_is_frozen_and_updated_returns_a_checked_copy() -> None:
    cfg = DetectorConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.epochs = 3  # type: ignore[misc]
    new = cfg.updated({"train": {"epochs": 3, "patch_zyx": [32, 48, 48]}, "detect": {"threshold": 0.2}})
    assert (new.train.epochs, new.train.patch_zyx, new.detect.threshold) == (3, (32, 48, 48), 0.2)
    assert cfg == DetectorConfig() and new.train.lr == cfg.train.lr
    with pytest.raises(InputError, match=r"train\.epochs must be an integer"):
        cfg.updated({"train": {"epochs": "three"}})
    with pytest.raises(InputError, match=r"unknown config section \[trian\]"):
        cfg.updated({"trian": {"epochs": 3}})


def test_resolve_device_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError, match="unknown device 'gpu'"):
        resolve_device("gpu")
    with pytest.raises(UsageError, match="unknown device 'cuda:x'"):
        resolve_device("cuda:x")
    if torch.cuda.is_available():
        assert resolve_device("cuda:0") == torch.device("cuda", 0)
        with pytest.raises(UsageError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        for name in ("cuda", "cuda:1"):
            with pytest.raises(UsageError, match="no CUDA device is available"):
                resolve_device(name)

"""The mask head's output through inference: on the input CT's own grid, wherever the network saw it."""

from __future__ import annotations

import numpy as np
import torch

from lymphcad.detector.config import DetectConfig, NetworkConfig
from lymphcad.detector.infer import detect_volume_with_mask, output_geometry, resample_onto
from lymphcad.detector.model import LoadedModel, load_model
from lymphcad.detector.network import build_network
from lymphcad.detector.plan import Plan, prepare_volume
from lymphcad.geometry import CTVolume, Geometry


def _oblique_volume() -> CTVolume:
    a = np.radians(10.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    flip = np.diag([-1.0, 1.0, -1.0])  # stored right-to-left and feet-first: reoriented by the plan
    geom = Geometry((30, 40, 44), (2.5, 0.9, 0.8), (12.0, -40.0, 300.0), rot @ flip)
    return CTVolume(np.full(geom.shape_zyx, -100, dtype=np.int16), geom)


def test_output_cells_map_back_to_the_input_grid() -> None:
    vol = _oblique_volume()
    prepared = prepare_volume(vol, Plan(spacing_mm=2.0))
    shape = tuple(s // 2 for s in prepared.hu.shape)
    cells = output_geometry(prepared.geometry, shape)  # type: ignore[arg-type]
    hot = torch.zeros(shape)
    c = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
    hot[c] = 1.0
    out = resample_onto(hot, cells, vol.geometry, chunk=7)
    assert out.shape == vol.geometry.shape_zyx
    peak = np.unravel_index(int(np.argmax(out)), out.shape)
    world_peak = vol.geometry.zyx_to_world(np.asarray(peak, dtype=float))
    world_cell = cells.zyx_to_world(np.asarray(c, dtype=float))
    # within one input voxel diagonal of the cell centre, and zero far from it
    assert np.linalg.norm(world_peak - world_cell) < np.linalg.norm(vol.geometry.spacing_zyx)
    assert out[0, 0, 0] == 0.0


def test_detect_volume_with_mask_gives_a_map_only_with_a_mask_head() -> None:
    vol = _oblique_volume()
    net = build_network(NetworkConfig(base_channels=8, blocks=(1, 1, 1), seg_head=True)).eval()
    model = LoadedModel("tiny", net, Plan(spacing_mm=2.0), DetectConfig(), "0" * 64, None, {})  # type: ignore[arg-type]
    res = detect_volume_with_mask(vol, model)
    assert res.mask_prob is not None and res.mask_prob.shape == vol.geometry.shape_zyx
    assert float(res.mask_prob.min()) >= 0.0 and float(res.mask_prob.max()) <= 1.0
    shipped = load_model("centernet3d_phantom_v2")  # trained before the mask head existed: still loads
    assert detect_volume_with_mask(vol, shipped).mask_prob is None

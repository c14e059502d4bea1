"""SEG pixels from the detector's per-detection masks (when it gives them) instead of spheres."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from lymphcad.dicomout.export import build_results
from lymphcad.dicomout.findings import AlgorithmInfo
from lymphcad.dicomout.masks import masks_for_detections
from lymphcad.dicomout.seg import read_seg_segments
from lymphcad.dicomout.source import read_source_series
from lymphcad.geometry import Geometry
from lymphcad.io.detections import Detection
from lymphcad.io.nifti import write_nifti
from lymphcad.io.reader import read_ct

pytestmark = pytest.mark.real


@dataclass(frozen=True)
class CropMask:
    """A mask on a crop of the CT grid (the shape of the detector's DetectionMask)."""

    mask_zyx: NDArray[np.bool_]
    geometry: Geometry


def test_seg_frames_are_the_masks_on_the_source_grid(real_ct_dir: Path) -> None:
    folder = real_ct_dir / "crlm-ct" / "CRLM-CT-1004"
    volume = read_ct(folder)
    source = read_source_series(folder)
    start, shape = (18, 240, 200), (5, 30, 40)
    crop = volume.geometry.crop(start, shape)
    zz, yy, xx = np.mgrid[0 : shape[0], 0 : shape[1], 0 : shape[2]]
    blob = ((zz - 2) / 2.5) ** 2 + ((yy - 15) / 12) ** 2 + ((xx - 20) / 17) ** 2 <= 1  # an irregular node
    blob[2, 15, 30:36] = True  # a spur no sphere would have
    centre = crop.zyx_to_world(np.array([2.0, 15.0, 20.0]))
    det = Detection("case", (float(centre[0]), float(centre[1]), float(centre[2])), 0.8, 20.0)
    other = Detection(
        "case", tuple(float(v) for v in volume.geometry.zyx_to_world([30, 100, 100])), 0.5, 10.0
    )
    results = build_results(
        source, [det, other], AlgorithmInfo("m", "0" * 64), masks=[CropMask(blob, crop), None]
    )
    assert results.seg is not None
    segments = read_seg_segments(results.seg)
    full = np.zeros(volume.array.shape, dtype=bool)
    full[start[0] : start[0] + shape[0], start[1] : start[1] + shape[1], start[2] : start[2] + shape[2]] = (
        blob
    )
    got = np.zeros_like(full)
    for k, sl in enumerate(source.slices):  # the reader's slice k is the k-th source slice along the normal
        frame = segments[0].pixels.get(sl.sop_instance_uid)
        if frame is not None:
            got[k] = frame
    assert np.array_equal(got, full)
    assert sum(int(p.sum()) for p in segments[1].pixels.values()) > 0  # the maskless one is a sphere


def test_masks_from_a_label_volume_follow_the_probability_ranks(real_ct_dir: Path, tmp_path: Path) -> None:
    folder = real_ct_dir / "crlm-ct" / "CRLM-CT-1004"
    volume = read_ct(folder)
    source = read_source_series(folder)
    labels = np.zeros(volume.array.shape, dtype=np.uint16)
    labels[10:14, 200:230, 150:170] = 1  # the most probable detection
    labels[25:27, 300:310, 300:325] = 2
    path = tmp_path / "case.nii.gz"
    write_nifti(path, labels, volume.geometry)
    centre = lambda zyx: tuple(float(v) for v in volume.geometry.zyx_to_world(np.asarray(zyx, float)))  # noqa: E731
    dets = [
        Detection("case", centre([26, 305, 312]), 0.4, 10.0),  # rank 2
        Detection("case", centre([40, 100, 100]), 0.1, 8.0),  # rank 3: no label, a sphere
        Detection("case", centre([12, 215, 160]), 0.9, 12.0),  # rank 1
    ]
    masks = masks_for_detections(path, dets)
    assert masks[1] is None and masks[0] is not None and masks[2] is not None
    assert masks[2].mask_zyx.shape == (4, 30, 20) and int(masks[0].mask_zyx.sum()) == 2 * 10 * 25
    results = build_results(source, dets, AlgorithmInfo("m", "0" * 64), masks=masks)
    assert results.seg is not None
    segments = read_seg_segments(results.seg)
    for segment, label in zip(segments[:2], (1, 2), strict=True):
        got = np.zeros(labels.shape, dtype=bool)
        for k, sl in enumerate(source.slices):
            if sl.sop_instance_uid in segment.pixels:
                got[k] = segment.pixels[sl.sop_instance_uid]
        assert np.array_equal(got, labels == label)

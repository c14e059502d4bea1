"""Second stage (false-positive reduction): crops, labelling, fusion, training, persistence, use in detect."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lymphcad.cohort import open_cohort
from lymphcad.detector.config import DetectConfig
from lymphcad.detector.fpr import (
    FPR_FILE,
    CandidateNet,
    FPRConfig,
    FPRModel,
    crop_cubes,
    fuse,
    load_fpr,
    save_fpr,
    score_crops,
)
from lymphcad.detector.fpr_train import (
    FUSION_WEIGHTS,
    CandidateSet,
    centre_crop,
    fit_network,
    label_candidates,
)
from lymphcad.detector.infer import detect_volume, with_overrides
from lymphcad.detector.model import LoadedModel, load_model, save_model
from lymphcad.detector.network import build_network
from lymphcad.detector.plan import Plan
from lymphcad.detector.synthetic import sphere_volume
from lymphcad.detector.train import evaluate_subset
from lymphcad.errors import InputError
from lymphcad.geometry import Geometry
from lymphcad.splits import read_fold


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """Small CNN steps: one torch thread (OpenMP threads spin-wait badly on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_crop_cubes_centre_and_padding() -> None:
    img = torch.zeros((20, 30, 40))
    img[5, 7, 9] = 1.0
    crops = crop_cubes(img, np.array([[5.2, 6.8, 9.4], [0.0, 0.0, 0.0]]), 8, pad_value=-3.0)
    assert crops.shape == (2, 1, 8, 8, 8)
    assert crops[0, 0, 4, 4, 4] == 1.0 and float(crops[0].sum()) == 1.0
    # the second cube hangs over the corner: its first four planes on each axis are padding
    assert float(crops[1, 0, :4].max()) == -3.0 and float(crops[1, 0, 4:, 4:, 4:].max()) == 0.0
    # a cube wholly outside is all padding
    far = crop_cubes(img, np.array([[100.0, 100.0, 100.0]]), 4, pad_value=-1.0)
    assert torch.all(far == -1.0)


def test_label_candidates_rules() -> None:
    cands = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 7.0], [30.0, 0.0, 0.0], [60.0, 0.0, 0.0], [0.0, 50.0, 0.0]])
    lab = label_candidates(
        cands,
        np.array([[0.0, 0.0, 1.0]]),
        np.array([16.0]),  # radius max(5, 8) = 8 mm
        np.array([[31.0, 0.0, 0.0], [0.0, 0.0, 3.0]]),
        np.array([4.0, 4.0]),
        match_min_mm=5.0,
    )
    # a hit on a node stays positive even when it also lies near an ignored finding
    assert lab.tolist() == [1, 1, -1, 0, 0]
    assert (
        label_candidates(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros((0, 3)), np.zeros(0)).size
        == 0
    )


def test_fuse_weights() -> None:
    p1 = np.array([0.9, 0.4, 0.1])
    p2 = np.array([0.1, 0.8, 0.5])
    np.testing.assert_allclose(fuse(p1, p2, 0.0), p1)
    np.testing.assert_allclose(fuse(p1, p2, 1.0), p2)
    np.testing.assert_allclose(fuse(p1, p2, 0.5), np.sqrt(p1 * p2))
    assert np.all((fuse(p1, p2, 0.3) >= 0) & (fuse(p1, p2, 0.3) <= 1))


def _blob_vs_tube(n: int, size: int, rng: np.random.Generator) -> CandidateSet:
    """Positives: a round blob at the centre; negatives: a tube through the centre (a vessel mimic)."""
    r = np.arange(size) - (size - 1) / 2.0
    zz, yy, xx = np.meshgrid(r, r, r, indexing="ij")
    blob = (zz**2 + yy**2 + xx**2 <= 9.0).astype(np.float32)
    crops, labels = [], []
    for i in range(n):
        if i % 2 == 0:
            x = blob
        else:
            axis = int(rng.integers(3))
            d2 = [yy**2 + xx**2, zz**2 + xx**2, zz**2 + yy**2][axis]
            x = (d2 <= 4.0).astype(np.float32)
        crops.append(x + rng.normal(0, 0.3, x.shape).astype(np.float32))
        labels.append(1 - i % 2)
    return CandidateSet(torch.from_numpy(np.stack(crops)[:, None]), np.array(labels, np.int8), 1, 0)


def test_fit_network_learns_blob_vs_tube() -> None:
    cfg = FPRConfig(crop_vox=12, jitter_vox=1, channels=4, iters=120, batch_size=16, warmup_iters=10, seed=1)
    rng = np.random.default_rng(0)
    data = _blob_vs_tube(80, cfg.crop_vox + 2 * cfg.jitter_vox, rng)
    torch.manual_seed(0)
    net, losses = fit_network(data, cfg)
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:20])
    test = _blob_vs_tube(40, cfg.crop_vox + 2 * cfg.jitter_vox, np.random.default_rng(9))
    p = score_crops(net, centre_crop(test.crops, cfg))
    pos, neg = p[test.labels == 1], p[test.labels == 0]
    auc = float((pos[:, None] > neg[None, :]).mean())
    assert auc > 0.95, auc


def test_fit_needs_both_classes() -> None:
    data = CandidateSet(torch.zeros((4, 1, 8, 8, 8)), np.ones(4, np.int8), 1, 0)
    with pytest.raises(InputError, match="positive and negative"):
        fit_network(data, FPRConfig(crop_vox=6, jitter_vox=1, iters=2))


def test_save_load_round_trip_and_corrupt_file(tmp_path: Path) -> None:
    cfg = FPRConfig(crop_vox=8, channels=4, weight=0.25, validation={"0.25": 0.7})
    torch.manual_seed(0)
    net = CandidateNet(4).eval()
    path = save_fpr(tmp_path, net, cfg, meta={"k": 1})
    assert path.name == FPR_FILE
    loaded = load_fpr(path)
    assert loaded.config == cfg
    x = torch.randn(3, 1, 8, 8, 8)
    np.testing.assert_allclose(score_crops(loaded.network, x), score_crops(net, x), rtol=1e-6)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match="second-stage"):
        load_fpr(path)
    other = tmp_path / "other.pt"
    torch.save({"format": "something-else"}, other)
    with pytest.raises(InputError, match="not a lymphcad second-stage"):
        load_fpr(other)


def test_detect_uses_the_second_stage_beside_the_model(tmp_path: Path) -> None:
    """load_model picks up fpr.pt; detect re-scores with p1^(1-w)·p2^w and re-sorts; --no-second-stage undoes it."""
    torch.manual_seed(0)
    net = build_network()
    with torch.no_grad():  # make the untrained first stage fire on soft tissue so there are candidates
        net.head_heatmap.bias.fill_(0.0)
    save_model(tmp_path / "m", net, Plan(), name="t", detect=DetectConfig(threshold=0.01, max_detections=20))
    cfg = FPRConfig(crop_vox=8, channels=4, weight=0.5)
    save_fpr(tmp_path / "m", CandidateNet(4).eval(), cfg)
    model = load_model(tmp_path / "m")
    assert isinstance(model.fpr, FPRModel) and "+fpr:" in model.fingerprint
    geom = Geometry((32, 48, 48), (2.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    vol, _ = sphere_volume(geom, [geom.zyx_to_world(np.array([16.0, 24.0, 24.0]))], [12.0], seed=1)
    with_fpr = detect_volume(vol, model, case_id="c")
    plain_model = LoadedModel(
        model.name, model.network, model.plan, model.detect, model.sha256, model.path, {}
    )
    plain = detect_volume(vol, plain_model, case_id="c")
    off = detect_volume(vol, model, with_overrides(model.detect, second_stage=False), case_id="c")
    assert plain and [d.probability for d in off] == [d.probability for d in plain]
    assert len(with_fpr) == len(plain)
    probs = [d.probability for d in with_fpr]
    assert probs == sorted(probs, reverse=True)
    # each fused probability lies between its first-stage probability and the second stage's (geometric mean)
    by_pos = {d.center_xyz: d.probability for d in plain}
    assert set(by_pos) == {d.center_xyz for d in with_fpr}
    assert any(abs(d.probability - by_pos[d.center_xyz]) > 1e-6 for d in with_fpr)


def test_train_fpr_end_to_end_on_a_phantom_cohort(tmp_path: Path) -> None:
    """train-fpr on a tiny phantom fold with the shipped first stage: writes fpr.pt, picks a weight, detect uses it."""
    from lymphcad.cli import main
    from lymphcad.phantom import generate_cohort
    from lymphcad.splits import split_cohort

    cohort = tmp_path / "c"
    generate_cohort(cohort, 4, "both", seed=5, difficulty=0.5, preset="tiny")
    split_cohort(cohort, scheme="kfold", folds=4, seed=0)
    import json
    import shutil

    from lymphcad.detector.model import DEFAULT_MODEL, resolve_model_path

    model_dir = tmp_path / "model"
    shutil.copytree(resolve_model_path(DEFAULT_MODEL).parent, model_dir)
    code = main(
        [
            "train-fpr",
            str(cohort),
            "--model",
            str(model_dir),
            "--split",
            str(cohort / "splits.json"),
            "--fold",
            "0",
            "--truth",
            "extra",
            "--iters",
            "30",
            "--device",
            "cpu",
            "--threads",
            "1",
        ]
    )
    assert code == 0
    fpr = load_fpr(model_dir / FPR_FILE)  # written beside the first stage's model.pt
    scores = fpr.config.validation
    assert set(scores) == {f"{w:g}" for w in FUSION_WEIGHTS}
    assert all(0.0 <= v <= 1.0 for v in scores.values())
    # the chosen weight is the validation CPM's best (ties: the smaller weight, i.e. less second stage)
    assert fpr.config.weight == max(FUSION_WEIGHTS, key=lambda w: (scores[f"{w:g}"], -w))
    # weight 0 is the first stage unchanged: its score is the first stage's own CPM on the fold's val cases
    _, val_ids, _ = read_fold(cohort / "splits.json", 0)
    first = load_model(model_dir)
    plain = with_overrides(first.detect, second_stage=False)
    c = open_cohort(cohort)
    val_dets = [d for case in val_ids for d in detect_volume(c.read_image(case), first, plain, case_id=case)]
    assert scores["0"] == pytest.approx(evaluate_subset(c, val_ids, val_dets)["val_cpm"], abs=1e-9)
    # candidates were labelled with the first stage's training thresholds (its training_config.toml)
    meta = torch.load(model_dir / FPR_FILE, weights_only=True)["meta"]
    assert (meta["enlarged_mm"], meta["ignore_below_mm"]) == (first.enlarged_mm, first.ignore_below_mm)
    assert meta["first_stage_sha256"] == first.sha256
    image = next((cohort / "images").glob("*.nii.gz"))
    dets = tmp_path / "dets.csv"
    assert main(["detect", str(image), "--model", str(model_dir), "--out", str(dets)]) == 0
    prov = json.loads(dets.with_suffix(".csv.json").read_text(encoding="utf-8"))
    text = json.dumps(prov)
    assert "+fpr:" in text and '"second_stage_used": true' in text

"""Training loop: the loss falls, CPU resume is bit-identical, damaged checkpoints fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lymphcad.detector.common import lr_factor
from lymphcad.detector.config import DetectorConfig, dumps_config, load_config
from lymphcad.detector.model import load_model, read_payload, truth_thresholds
from lymphcad.detector.sampling import PatchSampler, load_case, truth_from_annotations
from lymphcad.detector.synthetic import write_sphere_cohort
from lymphcad.detector.train import latest_checkpoint, train
from lymphcad.errors import InputError, UsageError
from lymphcad.splits import read_fold


def _tiny_config(epochs: int, iters: int) -> DetectorConfig:
    return DetectorConfig().updated(
        {
            "network": {"base_channels": 8, "blocks": [1, 1, 1]},
            "train": {
                "epochs": epochs,
                "iters_per_epoch": iters,
                "batch_size": 2,
                "patch_zyx": [24, 32, 32],
                "warmup_iters": 2,
                "val_every": 0,
                "device": "cpu",
                "lr": 3e-3,
            },
        }
    )


@pytest.fixture(scope="module")
def spheres(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sphere_cohort(
        tmp_path_factory.mktemp("spheres") / "cohort", n_cases=3, shape_zyx=(32, 40, 40)
    )


@pytest.mark.slow
def test_loss_falls(spheres: Path, tmp_path: Path) -> None:
    result = train(
        spheres, split=spheres / "splits.json", fold=0, out=tmp_path / "run", config=_tiny_config(8, 6)
    )
    losses = [float(r["loss"]) for r in result.history]
    assert len(losses) == 8
    assert losses[-1] < 0.6 * losses[0], losses
    assert (tmp_path / "run" / "history.csv").is_file()
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert (tmp_path / "run" / "config.toml").is_file()
    assert (tmp_path / "run" / "model" / "model.pt").is_file()


@pytest.mark.slow
def test_resume_on_cpu_is_bit_identical(spheres: Path, tmp_path: Path) -> None:
    split = spheres / "splits.json"
    full = train(spheres, split=split, fold=0, out=tmp_path / "full", config=_tiny_config(3, 3))
    part = train(
        spheres, split=split, fold=0, out=tmp_path / "part", config=_tiny_config(3, 3), stop_after_epochs=2
    )
    assert part.epochs_done == 2
    with pytest.raises(UsageError, match="--resume"):
        train(spheres, split=split, fold=0, out=tmp_path / "part", config=_tiny_config(3, 3))
    done = train(spheres, split=split, fold=0, out=tmp_path / "part", resume=True)
    assert done.epochs_done == 3
    a = read_payload(latest_checkpoint(full.run))  # type: ignore[arg-type]
    b = read_payload(latest_checkpoint(done.run))  # type: ignore[arg-type]
    assert a["epoch"] == b["epoch"] == 3
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert [r["loss"] for r in full.history] == [r["loss"] for r in done.history]


def test_corrupted_checkpoint_gives_clear_error(spheres: Path, tmp_path: Path) -> None:
    run = train(
        spheres, split=spheres / "splits.json", fold=0, out=tmp_path / "run", config=_tiny_config(1, 1)
    ).run
    # the model and the checkpoint carry the truth thresholds the second stage labels its candidates with
    assert load_model(run / "model").enlarged_mm == 10.0
    assert read_payload(latest_checkpoint(run))["meta"]["ignore_below_mm"] == 8.0  # type: ignore[arg-type]
    ckpt = latest_checkpoint(run)
    assert ckpt is not None
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="damaged or not a lymphcad model") as info:
        read_payload(ckpt)
    assert str(ckpt) in str(info.value)
    with pytest.raises(InputError, match="damaged"):
        train(spheres, split=spheres / "splits.json", fold=0, out=run, resume=True)
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(InputError, match="damaged"):
        load_model(bad)
    other = tmp_path / "other.pt"
    torch.save({"hello": 1}, other)
    with pytest.raises(InputError, match="not a lymphcad detector model"):
        load_model(other)


def test_patch_sampler_positive_patches_hold_a_centre(spheres: Path) -> None:
    from lymphcad.cohort import open_cohort
    from lymphcad.detector.plan import Plan

    cohort = open_cohort(spheres)
    case = load_case(cohort, cohort.cases[0], Plan(), truth_from_annotations(cohort, cohort.cases[0]))
    cfg = _tiny_config(1, 1).updated({"train": {"p_positive": 1.0}})
    sampler = PatchSampler([case], Plan(), cfg.train, cfg.augment)
    rng = np.random.default_rng(0)
    for _ in range(5):
        p = sampler.sample(rng)
        assert p.image.shape == (1, 24, 32, 32)
        assert float(p.heatmap.max()) == pytest.approx(1.0)
        assert float(p.image.min()) >= -1.5  # normalised, noise may push a little past the window
    # deterministic given the generator
    a = sampler.sample(np.random.default_rng(5))
    b = sampler.sample(np.random.default_rng(5))
    assert torch.equal(a.image, b.image) and torch.equal(a.heatmap, b.heatmap)


def test_train_leaves_the_callers_config_alone(spheres: Path, tmp_path: Path) -> None:
    """epochs/device given to train() apply to a copy; the run's thresholds reach its model and fpr training."""
    cfg = _tiny_config(2, 1).updated({"train": {"enlarged_mm": 12.0, "ignore_below_mm": 9.0}})
    before = dumps_config(cfg)
    result = train(spheres, split=spheres / "splits.json", fold=0, out=tmp_path / "run", config=cfg, epochs=1)
    assert result.epochs_done == 1 and dumps_config(cfg) == before
    assert load_config(tmp_path / "run" / "config.toml").train.epochs == 1
    model = load_model(tmp_path / "run" / "model")
    assert (model.enlarged_mm, model.ignore_below_mm) == (12.0, 9.0)
    # a model without the thresholds in its meta takes them from its run's config.toml
    assert truth_thresholds(tmp_path / "run" / "model" / "model.pt", {}) == (12.0, 9.0)
    assert truth_thresholds(tmp_path / "elsewhere" / "model.pt", {}) == (10.0, 8.0)


def test_lr_schedule() -> None:
    assert lr_factor(0, warmup=10, total=100) == pytest.approx(0.1)
    assert lr_factor(9, warmup=10, total=100) == pytest.approx(1.0)
    assert lr_factor(10, warmup=10, total=100) == pytest.approx(1.0)
    assert lr_factor(100, warmup=10, total=100) == pytest.approx(0.01)


def test_read_split_errors(tmp_path: Path) -> None:
    p = tmp_path / "s.json"
    p.write_text(json.dumps({"folds": [{"train": ["a"], "val": ["b"]}], "test": []}), encoding="utf-8")
    assert read_fold(p, 0) == (["a"], ["b"], [])
    with pytest.raises(InputError, match="fold 1 does not exist"):
        read_fold(p, 1)

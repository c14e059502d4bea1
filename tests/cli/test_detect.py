"""`lymphcad train` / `lymphcad detect` end to end on tiny sphere cohorts, and the shipped default model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lymphcad.cli import main
from lymphcad.detector.config import DetectorConfig, load_config, save_config
from lymphcad.detector.model import DEFAULT_MODEL, load_model
from lymphcad.detector.plan import load_plan
from lymphcad.detector.synthetic import sphere_volume, write_sphere_cohort
from lymphcad.geometry import Geometry
from lymphcad.io.detections import read_detections, read_provenance
from lymphcad.io.nifti import write_ct
from lymphcad.splits import read_fold


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli")
    cohort = write_sphere_cohort(root / "cohort", n_cases=3, shape_zyx=(32, 40, 40))
    cfg = DetectorConfig().updated(
        {
            "network": {"base_channels": 8, "blocks": [1, 1, 1]},
            "train": {
                "epochs": 2,
                "iters_per_epoch": 2,
                "batch_size": 2,
                "patch_zyx": [24, 32, 32],
                "val_every": 1,
            },
        }
    )
    save_config(root / "cfg.toml", cfg)
    run = root / "run"
    rc = main(
        [
            "train",
            str(cohort),
            "--split",
            str(cohort / "splits.json"),
            "--fold",
            "0",
            "--out",
            str(run),
            "--config",
            str(root / "cfg.toml"),
            "--device",
            "cpu",
            "--threads",
            "2",
        ]
    )
    assert rc == 0
    return cohort, run


def test_cli_train_writes_run_folder(trained: tuple[Path, Path]) -> None:
    """The run folder holds what the command was asked for: its config, plan, split, history, model, validation."""
    cohort, run = trained
    cfg = load_config(run / "config.toml")  # the resolved config: the file's values and the defaults
    assert (cfg.train.epochs, cfg.network.base_channels, cfg.train.patch_zyx) == (2, 8, (24, 32, 32))
    assert cfg.train.device == "cpu" and cfg.detect == DetectorConfig().detect
    plan = load_plan(run / "plan.json")
    assert plan.spacing_mm == cfg.plan.target_spacing_mm and plan.hu_window == cfg.plan.hu_window
    split = json.loads((run / "split.json").read_text(encoding="utf-8"))
    train_ids, val_ids, _ = read_fold(cohort / "splits.json", 0)
    assert (split["train"], split["val"], split["fold"], split["truth"]) == (train_ids, val_ids, 0, "labels")
    with (run / "history.csv").open(encoding="utf-8") as fh:
        history = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in history] == [1, 2]
    assert all(np.isfinite(float(r["loss"])) and float(r["loss"]) > 0 for r in history)
    assert all(r["val_cpm"] != "" for r in history)  # val_every = 1: both epochs validated
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = load_model(run / "model")
    assert model.name == "run" and model.meta["epoch"] == 2 and model.plan == plan
    assert model.network.config == cfg.network
    val = read_detections(run / "val" / "epoch_0001" / "dets.csv")
    assert set(val.case_ids.tolist()) <= set(val_ids)


def test_cli_detect_cohort_and_file(trained: tuple[Path, Path], tmp_path: Path) -> None:
    cohort, run = trained
    out = tmp_path / "dets.csv"
    rc = main(
        [
            "detect",
            str(cohort),
            "--model",
            str(run),
            "--out",
            str(out),
            "--threshold",
            "0.0",
            "--tta",
            "--json",
        ]
    )
    assert rc == 0
    table = read_detections(out, known_cases=[f"sphere_{i:03d}" for i in range(3)])
    assert len(table) > 0
    assert np.all((table.probabilities >= 0) & (table.probabilities <= 1))
    prov = read_provenance(out)
    assert prov is not None
    assert prov["model"]["name"] == "run" and len(prov["model"]["sha256"]) == 64
    assert prov["settings"]["tta_flips"] is True
    assert len(prov["inputs"]) == 3
    assert (tmp_path / "dets.json").is_file()
    single = tmp_path / "one.csv"
    assert (
        main(
            [
                "detect",
                str(cohort / "images" / "sphere_000.nii.gz"),
                "--model",
                str(run),
                "--out",
                str(single),
            ]
        )
        == 0
    )
    assert read_provenance(single) is not None


def test_cli_detect_damaged_model(
    trained: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cohort, _ = trained
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"\x00" * 100)
    rc = main(["detect", str(cohort), "--model", str(bad), "--out", str(tmp_path / "d.csv")])
    assert rc == 1
    assert "damaged" in capsys.readouterr().err
    assert (
        main(["detect", str(cohort), "--model", "no_such_model_name", "--out", str(tmp_path / "d.csv")]) == 1
    )


def _shipped_or_skip():  # type: ignore[no-untyped-def]
    from lymphcad.detector.model import shipped_models

    if DEFAULT_MODEL not in shipped_models():
        pytest.skip(f"the default model {DEFAULT_MODEL} is not shipped in this checkout")
    return load_model(None)


def test_shipped_model_empty_volume_has_no_confident_detection() -> None:
    from lymphcad.detector.infer import detect_volume

    model = _shipped_or_skip()
    geom = Geometry((60, 96, 96), (1.25, 0.8, 0.8), (0.0, 0.0, 0.0))
    vol, _ = sphere_volume(geom, np.zeros((0, 3)), [], seed=2, noise_hu=20.0)
    dets = detect_volume(vol, model, case_id="empty")
    assert all(d.probability < 0.5 for d in dets), [d.probability for d in dets]


def test_shipped_model_default_via_cli(tmp_path: Path) -> None:
    _shipped_or_skip()
    geom = Geometry((40, 64, 64), (2.0, 1.6, 1.6), (0.0, 0.0, 0.0), np.diag([-1.0, -1.0, 1.0]))
    vol, _ = sphere_volume(geom, [geom.zyx_to_world(np.array([20.0, 32.0, 32.0]))], [14.0], seed=4)
    write_ct(tmp_path / "ct.nii.gz", vol)
    out = tmp_path / "dets.csv"
    assert main(["detect", str(tmp_path / "ct.nii.gz"), "--out", str(out)]) == 0
    prov = json.loads((tmp_path / "dets.csv.json").read_text(encoding="utf-8"))
    assert prov["model"]["name"] == DEFAULT_MODEL
    # the planted 14 mm sphere is found where it is, at its size, and nothing else is confident
    dets = read_detections(out)
    confident = dets.probabilities >= 0.5
    assert confident.sum() == 1, dets.probabilities
    centre = geom.zyx_to_world(np.array([20.0, 32.0, 32.0]))
    assert np.linalg.norm(dets.centers_xyz[confident][0] - centre) < 3.0
    assert 10.0 <= dets.diameters_mm[confident][0] <= 20.0


def test_shipped_model_same_detections_from_dicom_and_nifti(tmp_path: Path) -> None:
    """One phantom case given as a NIfTI file and as a DICOM series: the same nodes at the same world points."""
    from lymphcad.geometry import CTVolume
    from lymphcad.io.dicom.write import write_dicom_series
    from lymphcad.phantom.generate import generate_case

    _shipped_or_skip()
    case = generate_case(3, 0, "mediastinal", 0.5, "tiny")
    vol = CTVolume(case.image, case.geometry)
    write_ct(tmp_path / "case.nii.gz", vol)
    write_dicom_series(vol, tmp_path / "dicom", patient_id="PHANTOM")
    for name, src in (("nifti", tmp_path / "case.nii.gz"), ("dicom", tmp_path / "dicom")):
        assert main(["detect", str(src), "--out", str(tmp_path / f"{name}.csv"), "--threads", "1"]) == 0
    a, b = read_detections(tmp_path / "nifti.csv"), read_detections(tmp_path / "dicom.csv")
    assert len(a) > 0 and len(a) == len(b)
    assert np.allclose(a.centers_xyz, b.centers_xyz, atol=1e-3)
    assert np.allclose(a.probabilities, b.probabilities, atol=1e-5)
    # and the detector finds the annotated nodes there (a real check of the DICOM path, not only equality)
    truth = np.array([n.center_xyz for n in case.annotations])
    top = b.centers_xyz[b.probabilities >= 0.5]
    found = [bool(len(top)) and float(np.min(np.linalg.norm(top - t, axis=1))) < 10.0 for t in truth]
    assert np.mean(found) >= 0.5, (found, len(top))

"""`detect` says when a synthetic-data model meets real CT, and its provenance says what the second stage did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_checks import run_cli
from lymphcad.cli._detect_support import second_stage_record, synthetic_model_notice
from lymphcad.detector.synthetic import write_sphere_cohort
from lymphcad.io.detections import read_provenance


def test_second_stage_record_says_what_ran_and_why() -> None:
    ran = second_stage_record(requested=True, flag=None, has_fpr=True)
    assert (
        ran["second_stage"] is True
        and ran["second_stage_used"] is True
        and "re-scored" in ran["second_stage_reason"]
    )
    missing = second_stage_record(requested=True, flag=None, has_fpr=False)
    assert missing["second_stage"] is False and missing["second_stage_requested"] is True
    assert "no fpr.pt" in missing["second_stage_reason"]
    off = second_stage_record(requested=False, flag=False, has_fpr=True)
    assert (
        off["second_stage"] is False and off["second_stage_reason"] == "switched off with --no-second-stage"
    )
    default_off = second_stage_record(requested=False, flag=None, has_fpr=True)
    assert default_off["second_stage_reason"] == "the model's settings switch it off"


def test_synthetic_notice_rule() -> None:
    meta = {"training_data": "synthetic: lymphcad phantom ..."}
    assert synthetic_model_notice("m", meta, None) is not None  # a file or DICOM folder: real CT
    assert synthetic_model_notice("m", meta, "synthetic phantom v1, seed 0") is None
    assert synthetic_model_notice("m", meta, "TCIA CT Lymph Nodes") is not None
    assert synthetic_model_notice("m", meta, "real CT x.nii.gz with synthetic nodes (insert)") is None
    assert synthetic_model_notice("m", {"training_data": "TCIA CT Lymph Nodes, fold 0"}, None) is None


def test_default_model_on_real_ct_prints_notice_and_honest_provenance(
    capsys: pytest.CaptureFixture[str], real_ct_dir: Path, tmp_path: Path
) -> None:
    ct = real_ct_dir / "totalsegmentator" / "example_ct_sm.nii.gz"
    out = tmp_path / "dets.csv"
    code, _, err = run_cli(capsys, "detect", ct, "--out", out)  # --device defaults to auto
    assert code == 0, err
    notes = [line for line in err.splitlines() if "trained on synthetic data only" in line]
    assert len(notes) == 1 and notes[0].startswith("note: the model ")
    prov = read_provenance(out)
    assert prov is not None
    settings = prov["settings"]
    assert settings["device"] in ("cpu", "cuda:0")  # auto resolved to a real device
    assert settings["second_stage"] == settings["second_stage_used"]
    assert isinstance(settings["second_stage_reason"], str) and settings["second_stage_reason"]
    assert json.loads((Path(str(out) + ".json")).read_text())["settings"]["second_stage_requested"] in (
        True,
        False,
    )


def test_no_notice_on_a_synthetic_cohort(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    cohort = write_sphere_cohort(tmp_path / "c", n_cases=1, shape_zyx=(24, 48, 48))
    data = json.loads((cohort / "dataset.json").read_text())
    assert "synthetic" in data["source"], data["source"]
    code, _, err = run_cli(capsys, "detect", cohort, "--out", tmp_path / "d.csv", "--device", "cpu")
    assert code == 0, err
    assert "trained on synthetic data only" not in err

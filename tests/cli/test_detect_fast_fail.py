"""`detect` refuses bad inputs from their headers, before torch and the model are loaded (no 2 s wait)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from cli_checks import cli_env
from lymphcad.geometry import CTVolume, Geometry
from lymphcad.io.dicom.write import write_dicom_series

_SCRIPT = """
import json, sys
from lymphcad.cli import main
results = []
for args in json.loads(sys.argv[1]):
    results.append(main(args))
print(json.dumps({"codes": results, "torch": "torch" in sys.modules}))
"""


def _ct(shape: tuple[int, int, int], seed: int) -> CTVolume:
    arr = np.random.default_rng(seed).integers(-1000, 300, shape).astype(np.int16)
    return CTVolume(arr, Geometry(shape, (2.5, 0.8, 0.8), (0.0, 0.0, 0.0), np.eye(3)))


def test_bad_inputs_fail_before_torch(tmp_path: Path) -> None:
    single = write_dicom_series(_ct((3, 24, 24), 0), tmp_path / "three")[0]
    four_d = tmp_path / "4d.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 10, 2), np.int16), np.eye(4)), str(four_d))
    flat = tmp_path / "flat.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 20), np.int16)), str(flat))
    two = tmp_path / "two"
    write_dicom_series(_ct((16, 24, 24), 1), two / "a", series_uid="1.2.3.1")
    write_dicom_series(_ct((16, 24, 24), 2), two / "b", series_uid="1.2.3.2")
    gap = write_dicom_series(_ct((16, 24, 24), 3), tmp_path / "gap")
    gap[6].unlink()
    bad_cohort = tmp_path / "cohort"
    bad_cohort.mkdir()
    (bad_cohort / "dataset.json").write_text("{}")
    cases = {
        str(single): "a single slice",
        str(four_d): "a 4D image",
        str(flat): "a single slice",
        str(two): "choose one with --series",
        str(tmp_path / "gap"): "pass --allow-gaps",
        str(bad_cohort): "dataset.json",
    }
    args = [["detect", path, "--out", str(tmp_path / f"d{i}.csv")] for i, path in enumerate(cases)]
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, json.dumps(args)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["codes"] == [1] * len(cases), proc.stderr
    assert result["torch"] is False
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(cases)
    for line, (path, problem) in zip(errors, cases.items(), strict=True):
        assert path in line and problem in line, line
    assert not list(tmp_path.glob("d*.csv"))

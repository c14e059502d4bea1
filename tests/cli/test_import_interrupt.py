"""Ctrl-C during `lymphcad import` exits 130; the rerun finishes the cohort as an uninterrupted run would."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest

from cli_checks import run_cli, start_cli, wait_until
from lymphcad.geometry import CTVolume, Geometry
from lymphcad.io.nifti import write_ct


@pytest.mark.slow
def test_interrupted_import_resumes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    inputs = []
    for n in range(8):
        arr = rng.integers(-1000, 400, (48, 192, 192)).astype(np.int16)
        path = tmp_path / "in" / f"scan{n}.nii.gz"
        path.parent.mkdir(exist_ok=True)
        write_ct(path, CTVolume(arr, Geometry(arr.shape, (2.5, 0.8, 0.8), (0.0, 0.0, float(n)))))
        inputs.append(path)
    out = tmp_path / "cohort"
    proc = start_cli("import", *inputs, "--out", out)
    # every input is checked first; the cohort folder appears only when writing starts
    wait_until(lambda: any((out / "images").glob("*.nii.gz")), proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1] == "interrupted" and "Traceback" not in stderr
    assert not (out / "dataset.json").exists()  # no cohort claims cases it does not have
    code, _, err = run_cli(capsys, "import", *inputs, "--out", out)
    assert code == 0, err
    ref = tmp_path / "reference"
    code, _, err = run_cli(capsys, "import", *inputs, "--out", ref)
    assert code == 0, err
    got, want = (json.loads((p / "dataset.json").read_text()) for p in (out, ref))
    assert got["cases"] == want["cases"] == [f"scan{n}" for n in range(8)]
    assert got["content_hashes"] == want["content_hashes"]
    for case in want["cases"]:
        assert (out / "images" / f"{case}.nii.gz").read_bytes() == (
            ref / "images" / f"{case}.nii.gz"
        ).read_bytes()

"""`lymphcad info`: a truncated file is named (exit 1), numbers are formatted alike, a single slice says so."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from cli_checks import run_cli, snapshot


def _facts(out: str) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


def test_truncated_file_is_named_and_exits_1(
    capsys: pytest.CaptureFixture[str], real_ct_dir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "series"
    shutil.copytree(real_ct_dir / "dcmqi" / "ct-3slice", folder)
    broken = folder / "02.dcm"
    broken.write_bytes(broken.read_bytes()[:200_000])
    before = snapshot([folder])
    code, out, err = run_cli(capsys, "info", folder)
    assert code == 1
    assert str(broken) in err and "truncated" in err
    assert str(broken) in _facts(out)["readable as one 3D CT"]
    assert snapshot([folder]) == before


def test_numbers_and_single_slice(capsys: pytest.CaptureFixture[str], real_ct_dir: Path) -> None:
    code, out, _ = run_cli(capsys, "info", real_ct_dir / "dcmqi" / "ct-3slice")
    facts = _facts(out)
    assert code == 0
    assert facts["slice thickness mm"] == "1.25"  # the header says "1.250000"
    assert facts["spacing (x × y × z) mm"] == "0.8105 × 0.8105 × 1"
    single = real_ct_dir / "dcmqi" / "ct-3slice" / "01.dcm"
    code, out, err = run_cli(capsys, "info", single)
    facts = _facts(out)
    assert code == 1 and "a single slice" in err and str(single) in err
    assert facts["spacing (x × y × z) mm"].endswith("— (one slice)")
    assert facts["gaps"] == "— (one slice)"


@pytest.mark.parametrize("dtype", [np.int32, np.float32, np.int16])
def test_memory_names_the_stored_type(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, dtype: type
) -> None:
    data = np.full((30, 30, 12), -700, dtype=dtype)
    data[0] = 40
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.5, 1.0])), str(path))
    code, out, _ = run_cli(capsys, "info", path)
    memory = _facts(out)["memory"]
    assert code == 0 and "as int16 HU" in memory
    if dtype is np.int16:
        assert "stored as" not in memory
    else:
        assert f"stored as {np.dtype(dtype).name}" in memory

"""Ctrl-C (a real SIGINT to a running ``python -m lymphcad``) exits 130 with "interrupted", never 0."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from cli_checks import start_cli, torch_loaded, wait_until
from lymphcad.detector.synthetic import write_sphere_cohort


def _interrupt(proc: object) -> tuple[int, str, str]:
    import subprocess

    assert isinstance(proc, subprocess.Popen)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


@pytest.mark.slow
def test_sigint_during_phantom_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "ph"
    proc = start_cli("phantom", "--out", out, "--cases", "40", "--preset", "tiny")
    wait_until(lambda: any((out / "images").glob("*.nii.gz")), proc)
    rc, stdout, err = _interrupt(proc)
    assert rc == 130, (stdout, err)
    assert err.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in err and "wrote" not in stdout
    # what was finished is kept (a rerun resumes), and no cohort claims cases it does not have
    assert not (out / "dataset.json").exists()


@pytest.mark.slow
def test_sigint_during_detect_exits_130(tmp_path: Path) -> None:
    cohort = write_sphere_cohort(tmp_path / "cohort", n_cases=12, shape_zyx=(48, 96, 96))
    out = tmp_path / "dets.csv"
    proc = start_cli("detect", cohort, "--out", out, "--device", "cpu", "--threads", "1")
    wait_until(lambda: torch_loaded(proc.pid), proc)
    rc, stdout, err = _interrupt(proc)
    assert rc == 130, (stdout, err)
    assert err.strip().splitlines()[-1] == "interrupted"
    assert "Traceback" not in err
    assert not out.exists()

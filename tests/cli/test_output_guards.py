"""Outputs never overwrite inputs: every command checks its output locations before any work."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_checks import assert_refused, cli_env, run_cli
from lymphcad import atomic
from lymphcad.cli._guards import check_detections_output, check_output_dir, check_output_file, managed_part
from lymphcad.detector.synthetic import write_sphere_cohort
from lymphcad.errors import UsageError
from lymphcad.geometry import CTVolume, Geometry
from lymphcad.io.detections import Detection, write_detections
from lymphcad.io.nifti import write_ct


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("guards")
    cohort = write_sphere_cohort(root / "cohort", n_cases=2, shape_zyx=(24, 32, 32))
    ct = root / "ct.nii.gz"
    rng = np.random.default_rng(0)
    write_ct(
        ct,
        CTVolume(
            rng.integers(-1000, 400, (24, 32, 32)).astype(np.int16),
            Geometry((24, 32, 32), (2.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3)),
        ),
    )
    dets = root / "dets.csv"
    write_detections(dets, [Detection("sphere_000", (0.0, 0.0, 110.0), 0.9, 10.0)])
    return {"root": root, "cohort": cohort, "ct": ct, "dets": dets}


def test_detect_refuses_to_overwrite_its_input(
    capsys: pytest.CaptureFixture[str], data: dict[str, Path]
) -> None:
    ct = data["ct"]
    assert_refused(
        capsys, ["detect", ct, "--out", ct], code=2, names=[ct], problem="must end in .csv", unchanged=[ct]
    )


def test_detect_output_without_csv_suffix_would_clash_with_json(
    capsys: pytest.CaptureFixture[str], data: dict[str, Path]
) -> None:
    out = data["root"] / "dets"
    assert_refused(
        capsys,
        ["detect", data["ct"], "--out", out, "--json"],
        code=2,
        names=[out],
        problem="must end in .csv",
        unchanged=[data["ct"]],
    )


def test_detect_output_inside_cohort_images_refused(
    capsys: pytest.CaptureFixture[str], data: dict[str, Path]
) -> None:
    cohort = data["cohort"]
    out = cohort / "images" / "dets.csv"
    assert_refused(
        capsys,
        ["detect", cohort, "--out", out],
        code=2,
        names=[out, "images/dets.csv"],
        problem="a file of the cohort",
        unchanged=[cohort],
    )
    assert not out.exists()


def test_evaluate_outputs_never_replace_inputs(
    capsys: pytest.CaptureFixture[str], data: dict[str, Path]
) -> None:
    cohort, dets = data["cohort"], data["dets"]
    keep = [cohort, dets]
    assert_refused(
        capsys,
        ["evaluate", cohort, dets, "--out", cohort / "annotations.csv"],
        code=2,
        names=[cohort / "annotations.csv"],
        problem="must end in .json",
        unchanged=keep,
    )
    assert_refused(
        capsys,
        ["evaluate", cohort, dets, "--out", cohort / "dataset.json"],
        code=2,
        names=[cohort / "dataset.json"],
        problem="would overwrite dataset.json",
        unchanged=keep,
    )
    assert_refused(
        capsys,
        ["evaluate", cohort, dets, "--out", dets],
        code=2,
        names=[dets],
        problem="must end in .json",
        unchanged=keep,
    )
    # matches.csv goes beside eval.json: a detections file of that name is an input
    matches = data["root"] / "m" / "matches.csv"
    matches.parent.mkdir(exist_ok=True)
    matches.write_bytes(dets.read_bytes())
    assert_refused(
        capsys,
        ["evaluate", cohort, matches, "--out", matches.parent / "eval.json"],
        code=2,
        names=[matches],
        problem="is an input of this command",
        unchanged=[*keep, matches],
    )
    plot = cohort / "images" / "sphere_000.nii.gz"
    assert_refused(
        capsys,
        ["evaluate", cohort, dets, "--out", data["root"] / "e.json", "--plot", plot],
        code=2,
        names=[plot],
        problem="must end in .png",
        unchanged=keep,
    )
    plot = cohort / "images" / "froc.png"
    assert_refused(
        capsys,
        ["evaluate", cohort, dets, "--out", data["root"] / "e.json", "--plot", plot],
        code=2,
        names=[plot],
        problem="a file of the cohort",
        unchanged=keep,
    )
    assert not (data["root"] / "e.json").exists()


def test_split_cannot_overwrite_dataset_json(
    capsys: pytest.CaptureFixture[str], data: dict[str, Path]
) -> None:
    cohort = data["cohort"]
    target = cohort / "dataset.json"
    assert_refused(
        capsys,
        ["split", cohort, "--out", target],
        code=2,
        names=[target],
        problem="would overwrite dataset.json",
        unchanged=[cohort],
    )


def test_show_convert_import_guards(capsys: pytest.CaptureFixture[str], data: dict[str, Path]) -> None:
    cohort, ct = data["cohort"], data["ct"]
    out = cohort / "labels" / "x.png"
    assert_refused(
        capsys, ["show", cohort, "--out", out], code=2, names=[out], problem="a file of", unchanged=[cohort]
    )
    assert_refused(capsys, ["convert", ct, ct], code=2, names=[ct], problem="is an input", unchanged=[ct])
    image = cohort / "images" / "sphere_001.nii.gz"
    assert_refused(
        capsys,
        ["import", image, "--out", cohort],
        code=2,
        names=[cohort, image],
        problem="holds the input",
        unchanged=[cohort],
    )
    assert_refused(
        capsys,
        ["import", ct, "--out", ct],
        code=2,
        names=[ct],
        problem="must be a folder",
        unchanged=[ct],
    )


def test_unwritable_output_fails_before_torch_is_imported(data: dict[str, Path], tmp_path: Path) -> None:
    if os.geteuid() == 0:
        locked = data["ct"] / "sub"  # a "folder" that is a file: unwritable even for root
        problem = "is a file, not a folder"
    else:
        locked_dir = tmp_path / "ro"
        locked_dir.mkdir(mode=0o500)
        locked = locked_dir / "sub"
        problem = "no write permission"
    out = locked / "dets.csv"
    code = (
        "import sys; from lymphcad.cli import main; rc = main(sys.argv[1:]); "
        "print('torch imported' if 'torch' in sys.modules else 'no torch'); sys.exit(rc)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, "detect", str(data["ct"]), "--out", str(out)],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "no torch" in proc.stdout
    assert str(out) in proc.stderr and problem in proc.stderr


def test_cuda_index_is_a_device_name(capsys: pytest.CaptureFixture[str], data: dict[str, Path]) -> None:
    import torch

    out = data["root"] / "cuda.csv"
    code, _, err = run_cli(capsys, "detect", data["ct"], "--out", out, "--device", "cuda:0")
    if torch.cuda.is_available():
        assert code == 0, err
    else:  # accepted as a name, then refused because this machine has no GPU
        assert code == 2 and "--device cuda:0: no CUDA device is available" in err
        assert "must be cpu, cuda" not in err and not out.exists()


def test_device_names_checked_before_work(capsys: pytest.CaptureFixture[str], data: dict[str, Path]) -> None:
    rc, _, err = run_cli(capsys, "detect", data["ct"], "--out", data["root"] / "d.csv", "--device", "gpu0")
    assert rc == 2 and "cpu, cuda, cuda:N or auto" in err
    assert not (data["root"] / "d.csv").exists()


def test_guard_helpers(tmp_path: Path, data: dict[str, Path]) -> None:
    cohort = data["cohort"]
    assert managed_part(cohort / "images" / "a" / "b.png") == (cohort.resolve(), "images/a/b.png")
    assert managed_part(cohort / "eval.json") is None
    assert check_output_file(cohort / "eval.json", "--out", suffixes=(".json",)) == cohort / "eval.json"
    assert check_output_file(cohort / "splits.json", "--out", suffixes=(".json",), may_write=("splits.json",))
    with pytest.raises(UsageError, match="would overwrite splits.json"):
        check_output_file(cohort / "splits.json", "--out", suffixes=(".json",))
    with pytest.raises(UsageError, match="must end in .nii.gz or .nii"):
        check_output_file(tmp_path / "x.gz", "OUT", suffixes=(".nii.gz", ".nii"))
    with pytest.raises(UsageError, match="must end in .csv"):
        check_output_file(tmp_path / ".csv", "OUT", suffixes=(".csv",))  # a suffix alone is no name
    outs = check_detections_output(tmp_path / "d.csv", inputs=[data["ct"]], json_form=True)
    assert sorted(p.name for p in outs.values()) == ["d.csv", "d.csv.json", "d.json"]
    with pytest.raises(UsageError, match="lies inside the input folder"):
        check_output_dir(cohort / "extra" / "new", "--out", inputs=[cohort])


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_outputs_follow_the_umask(tmp_path: Path, mask: int) -> None:
    old = os.umask(mask)
    try:
        atomic.write_text(tmp_path / "a.txt", "x")
        with atomic.atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("y")
        plain = tmp_path / "plain.txt"
        plain.write_text("z")
        plain_dir = tmp_path / "plain_dir"
        plain_dir.mkdir()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o666 & ~mask
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == stat.S_IMODE(plain_dir.stat().st_mode)


def test_cli_outputs_readable_by_group_and_others(tmp_path: Path) -> None:
    """`phantom` run under umask 022 writes 0644 files (not 0600), so colleagues can read the cohort."""
    out = tmp_path / "ph"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; os.umask(0o022); from lymphcad.cli import main; sys.exit(main(sys.argv[1:]))",
            "phantom",
            "--out",
            str(out),
            "--cases",
            "1",
            "--preset",
            "tiny",
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}

"""`detect` as a batch on a phantom cohort: serial = local processes, a broken case is recorded while the
others finish, Ctrl-C keeps finished cases and a rerun only runs the missing ones, list files as input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from batch_helpers import DETECT_OPTS, copy_cohort, phantom_cohort, rows, truncate
from lymphcad.batch.detect import failures_path, parts_dir
from lymphcad.cli import main
from lymphcad.io.detections import read_provenance


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return phantom_cohort(tmp_path_factory.mktemp("batch") / "cohort", cases=4)


@pytest.fixture(scope="module")
def serial(cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the cohort run case after case in this process."""
    out = tmp_path_factory.mktemp("serial") / "dets.csv"
    assert main(["detect", str(cohort), "--out", str(out), *DETECT_OPTS]) == 0
    return out


def test_serial_run_writes_all_cases_and_cleans_its_work_folder(cohort: Path, serial: Path) -> None:
    found = {r[0] for r in rows(serial)}
    assert found == {f"phantom_{i:04d}" for i in range(4)}, found
    assert not parts_dir(serial).exists()
    assert not failures_path(serial).exists()
    prov = read_provenance(serial)
    assert prov is not None
    assert sorted(prov["inputs"]) == sorted(f"{cohort}#phantom_{i:04d}" for i in range(4))
    assert all(v.startswith("sha256-voxels:") for v in prov["inputs"].values())
    assert prov["settings"]["executor"].startswith("serial")


def test_two_worker_processes_give_the_serial_rows(
    cohort: Path, serial: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "dets.csv"
    timeline = tmp_path / "timeline.json"
    monkeypatch.setenv("LYMPHCAD_BATCH_TIMELINE", str(timeline))
    assert main(["detect", str(cohort), "--out", str(out), "--workers", "2", *DETECT_OPTS]) == 0
    assert rows(out) == rows(serial)
    assert out.read_bytes() == serial.read_bytes()  # assembled in case order: the same file
    prov = read_provenance(out)
    assert prov is not None and prov["settings"]["executor"].startswith("local processes (2 worker(s)")
    assert prov["inputs"] == read_provenance(serial)["inputs"]  # type: ignore[index]

    # the timeline: every case once, each worker set up once (its first task), the largest cases first
    tl = json.loads(timeline.read_text(encoding="utf-8"))
    assert sorted(t["key"] for t in tl["tasks"]) == [f"phantom_{i:04d}" for i in range(4)]
    assert all(t["ok"] and t["seconds"] > 0 and t["cpu_seconds"] > 0 for t in tl["tasks"])
    assert sum(w["tasks"] for w in tl["workers"]) == 4 and 1 <= len(tl["workers"]) <= 2
    assert sum(t["setup_seconds"] > 0 for t in tl["tasks"]) == len(tl["workers"])
    assert tl["marks"]["command"] <= tl["marks"]["warm_up"] <= tl["marks"]["imported"] <= tl["batch_started"]
    sizes = {p.name.removesuffix(".nii.gz"): p.stat().st_size for p in (cohort / "images").glob("*.nii.gz")}
    # picked up in queue order (started − set-up = when a worker took the task; two workers taking the
    # first two tasks at the same moment may record them either way round)
    picked = [t["key"] for t in sorted(tl["tasks"], key=lambda t: t["started"] - t["setup_seconds"])]
    assert max(sizes, key=lambda k: sizes[k]) in picked[:2]


def test_a_corrupt_case_is_recorded_and_the_others_finish(
    cohort: Path, serial: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = copy_cohort(cohort, tmp_path / "cohort")
    truncate(broken / "images" / "phantom_0002.nii.gz")
    out = tmp_path / "dets.csv"
    rc = main(["detect", str(broken), "--out", str(out), "--workers", "2", "--retries", "2", *DETECT_OPTS])
    assert rc == 1
    err = capsys.readouterr().err
    assert "phantom_0002" in err and "failures.csv" in err
    fail = failures_path(out).read_text(encoding="utf-8").splitlines()
    assert fail[0] == "case,error,attempts"
    assert len(fail) == 2 and fail[1].startswith("phantom_0002,") and fail[1].endswith(",3")
    assert "phantom_0002.nii.gz" in fail[1]  # the error names the file
    assert rows(out) == [r for r in rows(serial) if r[0] != "phantom_0002"]
    # the work folder is kept so that a rerun retries only the failed case
    assert sorted(p.name for p in parts_dir(out).glob("[!.]*.done.json")) == [
        f"phantom_{i:04d}.done.json" for i in (0, 1, 3)
    ]
    # repaired input → the rerun runs only that case, and the result is the full serial one
    (broken / "images" / "phantom_0002.nii.gz").write_bytes(
        (cohort / "images" / "phantom_0002.nii.gz").read_bytes()
    )
    assert main(["detect", str(broken), "--out", str(out), *DETECT_OPTS]) == 0
    assert "(3 from an earlier run)" in capsys.readouterr().out
    assert rows(out) == rows(serial)
    assert not failures_path(out).exists() and not parts_dir(out).exists()


def test_fail_fast_stops_and_keeps_what_finished(cohort: Path, tmp_path: Path) -> None:
    broken = copy_cohort(cohort, tmp_path / "cohort")
    truncate(broken / "images" / "phantom_0002.nii.gz")
    out = tmp_path / "dets.csv"
    rc = main(["detect", str(broken), "--out", str(out), "--fail-fast", "--retries", "0", *DETECT_OPTS])
    assert rc == 1
    assert not out.exists()  # no partial final CSV under the final name
    # serial order: the two cases before the broken one are kept for the rerun, the one after never ran
    assert sorted(p.name for p in parts_dir(out).glob("[!.]*.done.json")) == [
        "phantom_0000.done.json",
        "phantom_0001.done.json",
    ]


def test_changed_settings_rerun_every_case(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "dets.csv"
    broken = copy_cohort(cohort, tmp_path / "cohort")
    truncate(broken / "images" / "phantom_0003.nii.gz")
    assert main(["detect", str(broken), "--out", str(out), "--retries", "0", *DETECT_OPTS]) == 1
    records = list(parts_dir(out).glob("[!.]*.done.json"))
    assert len(records) == 3
    fp = {json.loads(p.read_text())["fingerprint"] for p in records}
    # another threshold is another run: the parts of the first one must not be reused
    opts = [*DETECT_OPTS[:2], "--threshold", "0.5"]
    (broken / "images" / "phantom_0003.nii.gz").write_bytes(
        (cohort / "images" / "phantom_0003.nii.gz").read_bytes()
    )
    assert main(["detect", str(broken), "--out", str(out), *opts]) == 0
    assert min(float(r[4]) for r in rows(out)) >= 0.5
    assert len(fp) == 1


def test_list_file_of_inputs(cohort: Path, serial: Path, tmp_path: Path) -> None:
    listing = tmp_path / "cts.txt"
    listing.write_text(
        f"# two CTs\n{cohort / 'images' / 'phantom_0001.nii.gz'}\n\n{cohort / 'images' / 'phantom_0003.nii.gz'}\n",
        encoding="utf-8",
    )
    out = tmp_path / "dets.csv"
    assert main(["detect", str(listing), "--out", str(out), *DETECT_OPTS]) == 0
    assert rows(out) == [r for r in rows(serial) if r[0] in ("phantom_0001", "phantom_0003")]


def test_list_file_with_a_missing_entry_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "cts.txt"
    listing.write_text("missing.nii.gz\n", encoding="utf-8")
    assert main(["detect", str(listing), "--out", str(tmp_path / "d.csv")]) == 1
    err = capsys.readouterr().err
    assert "cts.txt:1" in err and "missing.nii.gz" in err


def test_unwritable_output_fails_before_any_work(cohort: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    rc = main(["detect", str(cohort), "--out", str(blocker / "dets.csv"), *DETECT_OPTS])
    assert rc == 1


def _detect_cmd(cohort: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lymphcad", "detect", str(cohort), "--out", str(out), *DETECT_OPTS, *extra]


@pytest.fixture(scope="module")
def six(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 6-case cohort and its uninterrupted serial result (run as a user would: a fresh process)."""
    root = tmp_path_factory.mktemp("sigint")
    cohort = phantom_cohort(root / "cohort", cases=6, seed=5)
    ref = root / "ref.csv"
    subprocess.run(_detect_cmd(cohort, ref), check=True, env=_ENV, capture_output=True)
    return cohort, ref


_ENV = {**os.environ, "LYMPHCAD_NO_PROGRESS": "1"}


def _default_sigint() -> None:
    """Child side of Popen: Ctrl-C interrupts (Python keeps SIGINT ignored when it starts ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_ctrl_c_then_rerun_runs_only_the_missing_cases(
    six: tuple[Path, Path], tmp_path: Path, workers: str
) -> None:
    cohort, ref = six
    out = tmp_path / "dets.csv"
    proc = subprocess.Popen(
        _detect_cmd(cohort, out, "--workers", workers),
        env=_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a test run started in the background of a non-interactive shell (nohup …&) ignores SIGINT, and a
        # child would inherit that: give it the default a user's terminal gives
        preexec_fn=_default_sigint,
    )
    parts = parts_dir(out)
    deadline = time.monotonic() + 240
    while len(list(parts.glob("[!.]*.done.json"))) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    done = sorted(p.name for p in parts.glob("[!.]*.done.json"))
    assert 2 <= len(done) < 6
    assert not out.exists()

    rerun = subprocess.run(
        _detect_cmd(cohort, out, "--workers", workers), env=_ENV, capture_output=True, text=True, check=False
    )
    assert rerun.returncode == 0, rerun.stderr
    assert f"({len(done)} from an earlier run)" in " ".join(rerun.stdout.split())
    assert out.read_bytes() == ref.read_bytes()

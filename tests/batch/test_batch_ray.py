"""`detect --ray` and `prepare` on a local Ray (one Ray for the module): the same results as without Ray,
and a broken case recorded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_helpers import DETECT_OPTS, copy_cohort, phantom_cohort, rows, truncate
from lymphcad.batch.detect import failures_path
from lymphcad.batch.executors import start_local_ray
from lymphcad.cli import main
from lymphcad.io.detections import read_provenance
from lymphcad.tcia.prepare import PrepareOptions, prepare
from tcia_fixtures import build_collection

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'lymphcad[ray]')")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray (2 CPUs, small object store, no dashboard) for the module; `--ray` reuses it."""
    start_local_ray(2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return phantom_cohort(tmp_path_factory.mktemp("raybatch") / "cohort", cases=4)


@pytest.mark.slow
def test_ray_gives_the_serial_rows_and_a_broken_case_is_recorded(
    local_ray: None, cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serial = tmp_path / "serial.csv"
    assert main(["detect", str(cohort), "--out", str(serial), *DETECT_OPTS]) == 0
    out = tmp_path / "ray.csv"
    timeline = tmp_path / "timeline.json"
    monkeypatch.setenv("LYMPHCAD_BATCH_TIMELINE", str(timeline))
    assert main(["detect", str(cohort), "--out", str(out), "--ray", "--workers", "2", *DETECT_OPTS]) == 0
    assert out.read_bytes() == serial.read_bytes()
    # two actors, created (and importing lymphcad) before the batch, each set up once; Ray was already
    # running in this process, so joining it cost nothing
    tl = json.loads(timeline.read_text(encoding="utf-8"))
    assert len(tl["workers"]) == 2 and sum(w["tasks"] for w in tl["workers"]) == 4
    assert sum(t["setup_seconds"] > 0 for t in tl["tasks"]) == 2
    assert tl["executor_start"]["init_seconds"] < 1.0
    monkeypatch.delenv("LYMPHCAD_BATCH_TIMELINE")
    prov = read_provenance(out)
    assert prov is not None and prov["settings"]["executor"] == "local Ray (2 actor(s) x 1 thread(s))"
    assert ray.is_initialized()  # a Ray that the caller started is left running

    broken = copy_cohort(cohort, tmp_path / "broken")
    truncate(broken / "images" / "phantom_0001.nii.gz")
    out2 = tmp_path / "ray2.csv"
    rc = main(["detect", str(broken), "--out", str(out2), "--ray", "--workers", "2", *DETECT_OPTS])
    assert rc == 1
    fail = failures_path(out2).read_text(encoding="utf-8").splitlines()
    assert len(fail) == 2 and fail[1].startswith("phantom_0001,") and fail[1].endswith(",2")
    assert rows(out2) == [r for r in rows(serial) if r[0] != "phantom_0001"]


@pytest.mark.slow
@pytest.mark.real
def test_prepare_on_ray_writes_the_serial_cohort(local_ray: None, real_ct_dir: Path, tmp_path: Path) -> None:
    coll = build_collection(real_ct_dir, tmp_path / "fixture")
    raw = coll.write_series_folders(tmp_path / "raw", "classic")
    arch = coll.write_archives(tmp_path / "arch")
    cohorts = {}
    for name, ray_address in (("processes", None), ("ray", "")):
        out = tmp_path / name
        report = prepare(
            PrepareOptions(
                raw=raw, annotations=arch["MED_ABD_LYMPH_ANNOTATIONS"], out=out, workers=2, ray=ray_address
            )
        )
        assert not report.failed
        cohorts[name] = out
    assert report.executor == "local Ray (2 actor(s) x 1 thread(s))"
    for rel in ("annotations.csv", *(f"images/{c}.nii.gz" for c in coll.nodes)):
        assert (cohorts["ray"] / rel).read_bytes() == (cohorts["processes"] / rel).read_bytes(), rel

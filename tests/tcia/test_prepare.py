"""``lymphcad prepare`` on the fixture collection: layouts, coordinates vs SimpleITK, masks, candidates, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lymphcad.cohort import open_cohort
from lymphcad.io.detections import read_detections
from lymphcad.splits import split_cohort
from lymphcad.tcia.archives import PatientCentroids
from lymphcad.tcia.prepare import PrepareOptions, auto_deflate_threads, prepare
from lymphcad.tcia.prepare_case import check_centroids
from tcia_fixtures import PHI_BIRTHDATE, FixtureCollection, build_collection, read_sitk_series

pytestmark = pytest.mark.real

CT_PIDS = ["ABD_LYMPH_001", "ABD_LYMPH_002", "MED_LYMPH_001", "MED_LYMPH_002"]


@pytest.fixture(scope="module")
def coll(real_ct_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> FixtureCollection:
    return build_collection(real_ct_dir, tmp_path_factory.mktemp("tcia-fixture"))


@pytest.fixture(scope="module")
def prepared(coll: FixtureCollection, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, object]:
    work = tmp_path_factory.mktemp("prep")
    raw = coll.write_series_folders(work / "raw", "descriptive")
    arch = coll.write_archives(work / "archives")
    out = work / "cohort"
    report = prepare(
        PrepareOptions(
            raw=raw,
            annotations=arch["MED_ABD_LYMPH_ANNOTATIONS"],
            out=out,
            masks=arch["MED_ABD_LYMPH_MASKS"],
            candidates=arch["MED_ABD_LYMPH_CANDIDATES"],
            workers=2,
        )
    )
    return out, work, report


def test_cohort_valid_and_complete(prepared: tuple[Path, Path, object]) -> None:
    out, _, report = prepared
    cohort = open_cohort(out)
    assert cohort.cases == CT_PIDS
    assert not report.failed  # type: ignore[attr-defined]
    info = json.loads((out / "dataset.json").read_text())
    assert info["license"].startswith("CC BY 3.0")
    assert any("10.7937/K9/TCIA.2015.AQIIDCNM" in c for c in info["citation"])
    assert info["case_regions"] == {
        "ABD_LYMPH_001": "abdominal",
        "ABD_LYMPH_002": "abdominal",
        "MED_LYMPH_001": "mediastinal",
        "MED_LYMPH_002": "mediastinal",
    }
    hashes = info["content_hashes"]
    assert hashes["ABD_LYMPH_001"] == hashes["MED_LYMPH_002"] != hashes["ABD_LYMPH_002"]
    checks = info["self_checks"]
    assert checks["index_base"] == {"0-based": 4}
    assert checks["duplicate_volumes"] == [["ABD_LYMPH_001", "MED_LYMPH_002"]]
    assert checks["max_disagreement_mm"] < 0.05


def test_coordinates_equal_sitk(prepared: tuple[Path, Path, object], coll: FixtureCollection) -> None:
    out, _, _ = prepared
    with open(out / "annotations.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * len(CT_PIDS)
    for pid in CT_PIDS:
        img = read_sitk_series(coll.root / "ct" / pid)
        truth = coll.nodes[pid]
        mine = sorted((r for r in rows if r["case_id"] == pid), key=lambda r: int(r["node_id"]))
        for n, r in enumerate(mine):
            ref = img.TransformIndexToPhysicalPoint([int(v) for v in truth["indices"][n]])
            got = (float(r["coordX"]), float(r["coordY"]), float(r["coordZ"]))
            assert np.allclose(got, ref, atol=1e-3), (pid, n, got, ref)
            assert r["region"] == ("mediastinal" if pid.startswith("MED") else "abdominal")
            sizes = truth["sizes"][n]
            assert float(r["short_axis_mm"]) == pytest.approx(sizes[0], abs=1e-3)
            if pid.startswith("ABD"):
                assert float(r["long_axis_mm"]) == pytest.approx(sizes[1], abs=1e-3)
            else:
                assert r["long_axis_mm"] == ""


def test_masks_line_up_and_relabelled(prepared: tuple[Path, Path, object], coll: FixtureCollection) -> None:
    out, _, _ = prepared
    with open(out / "annotations.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for pid in CT_PIDS:
        ct = sitk.ReadImage(str(out / "images" / f"{pid}.nii.gz"))
        lab = sitk.ReadImage(str(out / "labels" / f"{pid}.nii.gz"))
        ref = read_sitk_series(coll.root / "ct" / pid)
        for a, b in ((ct, lab), (ct, ref)):
            assert a.GetSize() == b.GetSize()
            assert np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
            assert np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
            assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
        assert np.array_equal(sitk.GetArrayFromImage(ct), sitk.GetArrayFromImage(ref).astype(np.int16))
        arr = sitk.GetArrayFromImage(lab)
        assert arr.dtype == np.uint16
        assert sorted(np.unique(arr).tolist()) == [0, 1, 2]  # ids 3 and 7 relabelled to 1..2
        by_node = {int(r["node_id"]): r["label_id"] for r in rows if r["case_id"] == pid}
        # node 1 had id 7 (→ 2), node 3 had id 3 (→ 1), node 2 lies in no instance
        assert by_node == {1: "2", 2: "", 3: "1"}
        # the mask instance really contains the node's centre
        i, j, k = coll.nodes[pid]["indices"][0]
        assert arr[k, j, i] == 2


def test_candidates_in_detection_format(prepared: tuple[Path, Path, object], coll: FixtureCollection) -> None:
    out, _, _ = prepared
    table = read_detections(out / "candidates.csv")
    assert len(table) == sum(3 + 4 for _ in CT_PIDS)
    assert np.all(table.probabilities == 1.0)
    assert (out / "candidates.csv.json").is_file()
    with open(out / "extra" / "candidate_labels.csv", newline="") as fh:
        labels = list(csv.DictReader(fh))
    assert {r["label"] for r in labels} == {"pos", "neg"}


def test_resume_and_idempotent(prepared: tuple[Path, Path, object]) -> None:
    out, work, _ = prepared
    before = (out / "annotations.csv").read_bytes()
    arch = work / "archives"
    report = prepare(
        PrepareOptions(
            raw=work / "raw",
            annotations=arch / "MED_ABD_LYMPH_ANNOTATIONS.zip",
            out=out,
            masks=arch / "MED_ABD_LYMPH_MASKS.zip",
            candidates=arch / "MED_ABD_LYMPH_CANDIDATES.zip",
        )
    )
    assert report.summary["skipped"] == len(CT_PIDS) and report.summary["converted"] == 0
    assert (out / "annotations.csv").read_bytes() == before


@pytest.mark.parametrize("layout", ["classic", "flat"])
def test_other_layouts_and_extracted_archives(coll: FixtureCollection, tmp_path: Path, layout: str) -> None:
    raw = coll.write_series_folders(tmp_path / "raw", layout)
    arch = coll.write_archives(tmp_path / "arch", extracted=True)
    report = prepare(
        PrepareOptions(
            raw=raw,
            annotations=arch["MED_ABD_LYMPH_ANNOTATIONS"],
            out=tmp_path / "cohort",
            masks=arch["MED_ABD_LYMPH_MASKS"],
            patients=["ABD_LYMPH_002", "MED_LYMPH_001"],
        )
    )
    assert sorted(report.cases) == ["ABD_LYMPH_002", "MED_LYMPH_001"]
    assert report.cases["ABD_LYMPH_002"].checks["series"]["ignored_modalities"] == ["SEG"]
    open_cohort(tmp_path / "cohort")


def test_broken_patient_reported_not_fatal(coll: FixtureCollection, tmp_path: Path) -> None:
    raw = coll.write_series_folders(tmp_path / "raw", "classic")
    s = coll.ct_series("MED_LYMPH_001")
    d = raw / s.patient_id / s.study_uid / s.series_uid
    for p in sorted(d.iterdir())[:-1]:
        p.write_bytes(p.read_bytes()[:2000])  # truncated files: pixel data gone
    arch = coll.write_archives(tmp_path / "arch")
    report = prepare(
        PrepareOptions(
            raw=raw, annotations=arch["MED_ABD_LYMPH_ANNOTATIONS"], out=tmp_path / "cohort", workers=2
        )
    )
    assert "MED_LYMPH_001" in report.failed
    assert "MED_LYMPH_001" not in json.loads((tmp_path / "cohort" / "dataset.json").read_text())["cases"]
    assert len(report.cases) == 3
    # the batch engine retried it once, then listed it with its error
    fail = (tmp_path / "cohort" / "extra" / "prepare" / "failures.csv").read_text().splitlines()
    assert fail[0] == "case,error,attempts"
    assert len(fail) == 2 and fail[1].startswith("MED_LYMPH_001,") and fail[1].endswith(",2")


def test_mask_grid_mismatch_reported(coll: FixtureCollection, tmp_path: Path) -> None:
    import io
    import zipfile

    raw = coll.write_series_folders(tmp_path / "raw", "classic")
    arch = coll.write_archives(tmp_path / "arch")
    # shift one mask's origin by 2 mm
    src = zipfile.ZipFile(io.BytesIO(coll.archives["MED_ABD_LYMPH_MASKS"]))
    bad = tmp_path / "bad_masks.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for name in src.namelist():
            data = src.read(name)
            if "ABD_LYMPH_002" in name:
                p = tmp_path / "m.nii.gz"
                p.write_bytes(data)
                img = sitk.ReadImage(str(p))
                o = list(img.GetOrigin())
                o[0] += 2.0
                img.SetOrigin(o)
                sitk.WriteImage(img, str(p))
                data = p.read_bytes()
            zf.writestr(name, data)
    report = prepare(
        PrepareOptions(
            raw=raw,
            annotations=arch["MED_ABD_LYMPH_ANNOTATIONS"],
            out=tmp_path / "cohort",
            masks=bad,
            patients=["ABD_LYMPH_002"],
        )
    )
    m = report.cases["ABD_LYMPH_002"].checks["mask"]
    assert m["grid_matches_ct"] is False and "origin" in m["grid_differences"][0]
    assert not (tmp_path / "cohort" / "labels" / "ABD_LYMPH_002.nii.gz").exists()
    assert report.summary["masks"]["grid_mismatch"] == 1


def test_deflate_threads_share_the_cpus_and_do_not_change_the_files(
    prepared: tuple[Path, Path, object], coll: FixtureCollection, tmp_path: Path
) -> None:
    assert [auto_deflate_threads(w, cpus=16) for w in (1, 2, 3, 16, 32)] == [16, 8, 5, 1, 1]
    assert auto_deflate_threads(1, cpus=1) == 1
    cohort = prepared[0]
    raw = coll.write_series_folders(tmp_path / "raw", "classic")
    arch = coll.write_archives(tmp_path / "arch")
    report = prepare(
        PrepareOptions(
            raw=raw,
            annotations=arch["MED_ABD_LYMPH_ANNOTATIONS"],
            out=tmp_path / "cohort",
            patients=["ABD_LYMPH_002"],
            deflate_threads=3,
        )
    )
    assert report.summary["workers"] == 1 and report.summary["deflate_threads"] == 3
    assert any("1 worker(s) x 3 deflate thread(s)" in line for line in report.summary_lines())
    name = "images/ABD_LYMPH_002.nii.gz"
    assert (tmp_path / "cohort" / name).read_bytes() == (cohort / name).read_bytes()


def test_index_base_detection() -> None:
    from lymphcad.geometry import Geometry

    g = Geometry((50, 64, 64), (1.25, 0.8, 0.8), (-100.0, -120.0, -300.0))
    idx = np.array([[10, 20, 5], [30, 40, 45], [1, 2, 3]], dtype=float)
    pts = g.index_to_world(idx)
    world, c = check_centroids(PatientCentroids("X", idx, np.round(pts, 3), None), g)
    assert c["index_base"] == "0-based" and np.allclose(world, pts, atol=1e-3)
    world, c = check_centroids(PatientCentroids("X", idx + 1, np.round(pts, 3), None), g)
    assert c["index_base"] == "1-based" and np.allclose(world, pts, atol=1e-3)
    idx2 = idx.copy()
    idx2[:, 2] += 1
    world, c = check_centroids(PatientCentroids("X", idx2, pts, None), g)
    assert c["index_offset_ijk"] == [0, 0, 1] and c["index_offset_consistent"]
    mixed = idx.copy()
    mixed[0] += 1
    world, c = check_centroids(PatientCentroids("X", mixed, pts, None), g)
    assert c["index_base"] == "inconsistent" and c["nodes_over_0.05mm"] == [1]


def test_split_on_prepared_cohort_keeps_duplicates(prepared: tuple[Path, Path, object]) -> None:
    out, _, _ = prepared
    for scheme in ("kfold", "nih-cv"):
        _, splits = split_cohort(out, scheme=scheme, folds=2, seed=3, out=out / f"splits-{scheme}.json")
        assert splits.fold_of("ABD_LYMPH_001") == splits.fold_of("MED_LYMPH_002")
        assert any("identical volumes" in w for w in splits.warnings)


def test_cli_prepare_no_phi(
    coll: FixtureCollection,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lymphcad.cli import main

    monkeypatch.setenv("LYMPHCAD_NO_PROGRESS", "1")
    raw = coll.write_series_folders(tmp_path / "raw", "classic")
    arch = coll.write_archives(tmp_path / "arch")
    rc = main(
        [
            "prepare",
            str(raw),
            "--annotations",
            str(arch["MED_ABD_LYMPH_ANNOTATIONS"]),
            "--masks",
            str(arch["MED_ABD_LYMPH_MASKS"]),
            "--out",
            str(tmp_path / "cohort"),
            "--patients",
            "ABD_LYMPH_002",
            "--deflate-threads",
            "2",
        ]
    )
    cap = capfd.readouterr()
    text = cap.out + cap.err
    assert rc == 0, text
    assert "index base self-check" in text and "0-based: 1" in text
    assert "Doe" not in text and PHI_BIRTHDATE not in text
    for p in (tmp_path / "cohort").rglob("*.json"):
        assert "Doe" not in p.read_text() and PHI_BIRTHDATE not in p.read_text()


def test_missing_slice_needs_allow_gaps(coll: FixtureCollection, tmp_path: Path) -> None:
    """A series with one slice missing fails, naming --allow-gaps; prepare --allow-gaps resamples it."""
    from lymphcad.cli import main

    pid = "ABD_LYMPH_001"  # 12 contiguous slices
    raw = coll.write_series_folders(tmp_path / "raw", "classic")
    s = coll.ct_series(pid)
    files = sorted((raw / s.patient_id / s.study_uid / s.series_uid).iterdir())
    files[len(files) // 2].unlink()  # a gap of two slice steps in the middle
    annotations = arch = coll.write_archives(tmp_path / "arch")["MED_ABD_LYMPH_ANNOTATIONS"]
    report = prepare(PrepareOptions(raw=raw, annotations=arch, out=tmp_path / "c1", patients=[pid]))
    assert pid in report.failed
    assert "--allow-gaps" in (tmp_path / "c1" / "extra" / "prepare" / "failures.csv").read_text()
    args = [
        "--annotations",
        str(annotations),
        "--out",
        str(tmp_path / "c2"),
        "--patients",
        pid,
        "--allow-gaps",
    ]
    assert main(["prepare", str(raw), *args]) == 0
    img = sitk.ReadImage(str(tmp_path / "c2" / "images" / f"{pid}.nii.gz"))
    assert img.GetSize()[2] == len(files)  # the missing slice is interpolated back onto the uniform grid
    assert json.loads((tmp_path / "c2" / "dataset.json").read_text())["cases"] == [pid]

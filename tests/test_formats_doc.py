"""docs/formats.md states exactly the columns and keys the code writes, and the help texts point to it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cli_checks import run_cli
from evaluate_fixtures import MASK_DETS, write_mask_cohort
from lymphcad.batch.engine import Failure, write_failures
from lymphcad.cli._detect_support import second_stage_record
from lymphcad.cohort import (
    ANNOTATION_COLUMNS,
    Annotation,
    DatasetInfo,
    IgnorePoint,
    open_cohort,
    write_annotations,
    write_ignore,
)
from lymphcad.evaluate.run import evaluate_cohort, write_outputs
from lymphcad.evaluate.settings import EvalSettings
from lymphcad.io.detections import (
    Detection,
    DetectionTable,
    read_detections,
    write_detections,
    write_detections_json,
    write_provenance,
)
from lymphcad.serve.store import REVIEW_COLUMNS
from lymphcad.splits import split_cohort

DOC = Path(__file__).resolve().parents[1] / "docs" / "formats.md"
_BLOCK = re.compile(r"<!-- (header|json): ([^>]+?) -->\s*```[a-z]*\n(.*?)```", re.S)


def _blocks() -> dict[str, str]:
    return {
        name.strip(): body.strip() for _kind, name, body in _BLOCK.findall(DOC.read_text(encoding="utf-8"))
    }


def _header(name: str) -> list[str]:
    return _blocks()[name].split(",")


def _json(name: str) -> dict[str, Any]:
    return json.loads(_blocks()[name])


def _first_line(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()[0].split(",")


def test_doc_has_every_block() -> None:
    assert set(_blocks()) == {
        "dataset.json",
        "annotations.csv",
        "ignore.csv",
        "detections",
        "detections optional",
        "detections json",
        "provenance",
        "calibration",
        "eval.json",
        "matches.csv",
        "splits.json",
        "review.csv",
        "failures.csv",
    }


def test_calibration_json_keys(tmp_path: Path) -> None:
    from lymphcad.measure.calibration import Calibration, load_calibration

    cal = Calibration("isotonic", (0.0, 0.5, 1.0), (0.0, 0.2, 1.0), n_detections=10, n_hits=3, source="t")
    written = json.loads(cal.save(tmp_path / "calibration.json").read_text(encoding="utf-8"))
    doc = _json("calibration")
    assert list(doc) == list(written)
    assert load_calibration(tmp_path / "calibration.json") == cal


def test_cohort_csv_headers_are_what_the_code_writes(tmp_path: Path) -> None:
    write_annotations(
        tmp_path / "a.csv", [Annotation("c", 1, (0.0, 0.0, 0.0), 10.0, None, "abdominal", None)]
    )
    assert _header("annotations.csv") == _first_line(tmp_path / "a.csv") == list(ANNOTATION_COLUMNS)
    write_ignore(tmp_path / "i.csv", [IgnorePoint("c", (0.0, 0.0, 0.0), 3.0)])
    assert _header("ignore.csv") == _first_line(tmp_path / "i.csv")


def test_dataset_json_keys(tmp_path: Path) -> None:
    info = DatasetInfo("n", "d", ["a"], {"a": "both"}, "CC0", ["cite"], "src", content_hashes={"a": "x"})
    assert list(_json("dataset.json")) == list(info.to_json())


def test_detection_files(tmp_path: Path) -> None:
    det = Detection("c", (1.0, 2.0, 3.0), 0.5, 10.0)
    write_detections(tmp_path / "d.csv", [det])
    assert _header("detections") == _first_line(tmp_path / "d.csv")
    # the optional columns: readers ignore them (and they follow the six in the documented order)
    optional = _header("detections optional")
    (tmp_path / "o.csv").write_text(
        ",".join(_header("detections") + optional) + "\nc,1,2,3,0.5,10,8,12,0.4,mediastinal:4R,5,6,7\n"
    )
    table = read_detections(tmp_path / "o.csv")
    assert table.rows() == [
        Detection("c", (1.0, 2.0, 3.0), 0.5, 10.0, 8.0, 12.0, 0.4, "mediastinal:4R", (5, 6, 7))
    ]
    write_detections_json(tmp_path / "d.json", [det])
    (row,) = json.loads((tmp_path / "d.json").read_text())
    assert all(list(row) == list(example) for example in json.loads(_blocks()["detections json"]))
    prov = write_provenance(
        tmp_path / "d.csv",
        model_name="m",
        model_sha256="h",
        settings={
            "threshold": 0.05,
            "device": "cpu",
            **second_stage_record(requested=True, flag=None, has_fpr=False),
        },
        inputs={"x": "y"},
        license=None,
        citation=[],
    )
    assert prov.name == "d.csv.json"
    written = json.loads(prov.read_text())
    doc = _json("provenance")
    assert list(doc) == list(written)
    assert set(doc["settings"]) <= set(written["settings"])


def test_failures_csv_header(tmp_path: Path) -> None:
    write_failures(tmp_path / "f.csv", [Failure("case_a", "images/case_a.nii.gz: truncated", 2)])
    assert _header("failures.csv") == _first_line(tmp_path / "f.csv")


def test_eval_json_and_matches(tmp_path: Path) -> None:
    write_mask_cohort(tmp_path / "cohort")
    dets = DetectionTable.from_detections([Detection(c, xyz, p, d) for c, xyz, p, d in MASK_DETS])
    result = evaluate_cohort(open_cohort(tmp_path / "cohort"), dets, EvalSettings(bootstrap=10))
    eval_json, matches = write_outputs(result, tmp_path / "eval.json")
    written = json.loads(eval_json.read_text())
    doc = _json("eval.json")
    assert list(doc) == list(written)
    assert list(doc["pooled"]) == list(written["pooled"])
    assert list(doc["pooled"]["sensitivity_at_fp"]) == list(written["pooled"]["sensitivity_at_fp"])
    assert list(doc["by_size"]) == list(written["by_size"])
    assert set(doc["rule"]) <= set(written["rule"])
    assert _header("matches.csv") == _first_line(matches)


def test_splits_json_keys(tmp_path: Path) -> None:
    write_mask_cohort(tmp_path / "cohort")
    target, _ = split_cohort(tmp_path / "cohort", scheme="kfold", folds=2, seed=0, test_fraction=0.0)
    written = json.loads(target.read_text())
    doc = _json("splits.json")
    assert [k for k in written if k in doc] == list(doc)
    assert list(doc["folds"][0]) == list(written["folds"][0])


def test_review_csv_header() -> None:
    assert _header("review.csv") == list(REVIEW_COLUMNS)


def test_review_csv_and_optional_columns_follow_the_contract(shared_dir: Path) -> None:
    """The documented review.csv header and optional detection columns are the shared contract's (1.2)."""
    contract = (shared_dir / "docs" / "formats.md").read_text(encoding="utf-8")
    assert f"`{','.join(_header('review.csv'))}`" in contract
    listed = re.search(
        r"in this order when present; readers ignore columns they do not\s+know: (.*?)\.\s", contract, re.S
    )
    assert listed is not None
    names = re.findall(r"`([a-z_,]+)`", listed.group(1))
    assert ",".join(names).split(",") == _header("detections optional")


@pytest.mark.parametrize(
    "command", ["import", "detect", "evaluate", "split", "train", "train-fpr", "info", "prepare"]
)
def test_help_texts_cite_the_projects_formats_doc(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run_cli(capsys, command, "--help")
    assert code == 0
    text = " ".join(out.split())
    assert "docs/formats.md" in text and "formats.md §" not in text

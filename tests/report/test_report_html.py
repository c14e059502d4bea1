"""``lymphcad report``: one self-contained HTML file that renders in Chromium with every image loaded."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lymphcad.cli import main
from lymphcad.cohort import open_cohort
from lymphcad.evaluate.literature import PUBLISHED_LABEL
from lymphcad.io.detections import read_detections
from review_fixtures import CHROMIUM, CHROMIUM_ARGS, ReviewRun


@pytest.fixture(scope="module")
def report(review_run: ReviewRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    eval_json = root / "eval.json"
    assert (
        main(
            [
                "evaluate",
                str(review_run.cohort),
                str(review_run.dets),
                "--out",
                str(eval_json),
                "--bootstrap",
                "50",
            ]
        )
        == 0
    )
    out = root / "run.html"
    args = [
        "report",
        str(review_run.cohort),
        "--dets",
        str(review_run.dets),
        "--eval",
        str(eval_json),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    return out


def test_report_is_self_contained_and_complete(report: Path, review_run: ReviewRun) -> None:
    text = report.read_text(encoding="utf-8")
    srcs = re.findall(r"""\bsrc=['"]([^'"]*)['"]""", text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"""\b(href|src)=['"]?(https?:|//)""", text)
    assert "default-src 'none'" in text
    cohort = open_cohort(review_run.cohort)
    table = read_detections(review_run.dets)
    n_above = int((table.probabilities >= 0.5).sum())
    n_missed = text.count("missed node ")
    assert len(srcs) == 1 + 2 * (n_above + n_missed)  # FROC + axial/coronal pair per panel
    assert text.count("#1 p ") == len(cohort.cases)
    for c in cohort.info.citation:
        assert c in text or c.replace("'", "&#x27;") in text
    assert cohort.info.license in text
    assert PUBLISHED_LABEL in text and "not this run" in text
    assert "synthetic images" in text  # the phantom says so next to the numbers
    assert "Model card" in text and "centernet3d" in text


def test_report_refuses_an_eval_of_other_detections(
    review_run: ReviewRun, report: Path, tmp_path: Path
) -> None:
    eval_json = report.parent / "eval.json"
    data = json.loads(eval_json.read_text())
    data["pooled"]["cpm"] = 0.123
    bad = tmp_path / "eval.json"
    bad.write_text(json.dumps(data))
    rc = main(
        [
            "report",
            str(review_run.cohort),
            "--dets",
            str(review_run.dets),
            "--eval",
            str(bad),
            "--out",
            str(tmp_path / "r.html"),
        ]
    )
    assert rc == 1 and not (tmp_path / "r.html").exists()
    rc = main(
        ["report", str(review_run.cohort), "--dets", str(review_run.dets), "--out", str(review_run.dets)]
    )
    assert rc == 2


@pytest.mark.slow
def test_report_renders_in_chromium_with_every_image_loaded(report: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright (Python) is not installed")
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package chromium)")
    requests: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            images = page.evaluate(
                "() => Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
            )
            size = page.evaluate("() => [document.body.scrollWidth, document.body.scrollHeight]")
        finally:
            browser.close()
    assert len(images) > 3
    assert all(done and w > 0 and h > 0 for done, w, h in images), images
    assert size[1] > 1000
    assert all(u.startswith(("data:", "file:")) for u in requests), requests

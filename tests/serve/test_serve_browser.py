"""End to end in headless Chromium (Debian's, driven by Playwright): review a case with the keyboard and mouse.

The server runs in a thread on 127.0.0.1 with a free port; the browser opens a case, steps to a detection
with j, accepts it, rejects another, adds a missed node by clicking (and one by Shift+drag, with its
diameter), reloads, finds every decision, sees a second tab's decision arrive,
exports, and saves a screenshot that must show an image (not a blank page).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lymphcad.citations import SYNTHETIC_LICENSE
from lymphcad.cohort import CohortWriter, DatasetInfo
from lymphcad.geometry import CTVolume, Geometry, reorient_to_lps
from lymphcad.io.detections import read_detections
from lymphcad.serve.server import make_server, plan_launch
from lymphcad.serve.service import ReviewService, ReviewSettings
from lymphcad.serve.store import Action, read_review
from review_fixtures import CHROMIUM, CHROMIUM_ARGS, ReviewRun, free_port

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright (Python) is not installed")
if not CHROMIUM.is_file():
    pytest.skip(f"no Chromium at {CHROMIUM} (Debian package chromium)", allow_module_level=True)


@contextlib.contextmanager
def _running(cohort: Path, dets: Path, out: Path) -> Iterator[str]:
    """A review server in a thread on a free port; yields its URL."""
    launch = plan_launch("127.0.0.1", free_port())
    server = make_server(ReviewService(ReviewSettings(cohort, dets, out, reader="e2e")), launch)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield launch.url
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def served(review_run: ReviewRun, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A running review server (thread) and its output folder."""
    out = tmp_path / "review"
    with _running(review_run.cohort, review_run.dets, out) as url:
        yield url, out


def _not_blank(path: Path) -> None:
    img = np.asarray(Image.open(path).convert("L"), dtype=float)
    h, w = img.shape
    pane = img[h // 10 : h * 9 // 10, w // 6 : w // 2]  # inside the axial pane
    assert pane.std() > 20, f"screenshot looks blank (std {pane.std():.1f})"
    assert len(np.unique(pane.astype(np.uint8))) > 50


def test_review_a_case_in_chromium(served: tuple[str, Path], review_run: ReviewRun, tmp_path: Path) -> None:
    url, out = served
    case_id = "phantom_0001"
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.on("pageerror", lambda e: errors.append(str(e)))
            # a request cut short by the reload or by closing the browser (net::ERR_ABORTED) is not an error
            page.on(
                "requestfailed",
                lambda r: None if r.failure == "net::ERR_ABORTED" else errors.append(f"{r.url}: {r.failure}"),
            )
            page.goto(f"{url}#case={case_id}")
            page.wait_for_function(
                f"() => window.__lymphcad && window.__lymphcad.ready === '{case_id}'", timeout=30_000
            )
            page.locator("#pane-axial canvas.view").hover()
            page.keyboard.press("j")
            page.wait_for_function("() => window.__lymphcad.current === 'd1'")
            page.keyboard.press("a")
            page.wait_for_selector('#findings li[data-id="d1"].accept')
            page.keyboard.press("j")
            page.wait_for_function("() => window.__lymphcad.current === 'd2'")
            page.keyboard.press("r")
            page.wait_for_selector('#findings li[data-id="d2"].reject')
            # a missed node: add mode, then a click on the axial pane
            page.keyboard.press("n")
            box = page.locator("#pane-axial canvas.view").bounding_box()
            assert box is not None
            page.mouse.click(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.55)
            page.wait_for_selector('#findings li[data-id="a1"].add')
            # another one with Shift, dragged out from its centre to give its diameter
            x, y = box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.45
            page.keyboard.down("Shift")
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + 30, y, steps=5)
            page.mouse.up()
            page.keyboard.up("Shift")
            page.wait_for_selector('#findings li[data-id="a2"].add')
            # everything is on the server: a reload shows the same three decisions
            page.reload()
            page.wait_for_function(
                f"() => window.__lymphcad && window.__lymphcad.ready === '{case_id}'", timeout=30_000
            )
            page.wait_for_selector('#findings li[data-id="d1"].accept')
            page.wait_for_selector('#findings li[data-id="d2"].reject')
            page.wait_for_selector('#findings li[data-id="a1"].add')
            page.wait_for_selector('#findings li[data-id="a2"].add')
            assert "+2" in page.locator("#case-table tr.current td").nth(3).inner_text()
            # a second tab on the same case: its decision reaches the first tab, nothing is lost
            other = browser.new_page(viewport={"width": 1200, "height": 800})
            other.goto(f"{url}#case={case_id}")
            other.wait_for_function(f"() => window.__lymphcad && window.__lymphcad.ready === '{case_id}'")
            other.locator("#pane-axial canvas.view").hover()
            for _ in range(3):
                other.keyboard.press("j")
            other.wait_for_function("() => window.__lymphcad.current === 'd3'")
            other.keyboard.press("a")
            other.wait_for_selector('#findings li[data-id="d3"].accept')
            other.wait_for_selector('#findings li[data-id="d1"].accept')
            page.wait_for_selector('#findings li[data-id="d3"].accept', timeout=10_000)
            other.close()
            page.click("#export")
            page.wait_for_function(
                "() => document.querySelector('#toast').textContent.startsWith('exported')"
            )
            shot = tmp_path / "review.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    assert not errors, errors
    _not_blank(shot)
    rows = read_review(out / "review.csv")
    assert [(r.finding_id, r.action) for r in rows] == [
        ("d1", Action.ACCEPT),
        ("d2", Action.REJECT),
        ("a1", Action.ADD),
        ("a2", Action.ADD),
        ("d3", Action.ACCEPT),
    ]
    assert rows[2].diameter_mm is None  # a plain click: centre only
    assert rows[3].diameter_mm is not None and 5 < rows[3].diameter_mm < 100  # dragged 30 px = the radius
    assert all(r.case_id == case_id and r.reader == "e2e" for r in rows)
    exported = read_detections(out / "reviewed_dets.csv")
    assert sorted(exported.probabilities.tolist())[-2:] == [1.0, 1.0] and len(exported) == 4


def test_panes_follow_the_radiological_convention(tmp_path: Path) -> None:
    """A bright marker left, anterior and superior in a RAS-stored image lands where a radiologist expects it."""
    direction = np.diag([-1.0, -1.0, 1.0])  # index axes run to patient right, anterior, superior
    geom = Geometry((40, 50, 60), (2.0, 1.0, 1.5), (30.0, 20.0, -50.0), direction)
    array = np.zeros(geom.shape_zyx, dtype=np.int16)
    k, j, i = 30, 38, 12  # stored index axes run right, anterior, superior: this is left, anterior, superior
    array[k - 1 : k + 2, j - 1 : j + 2, i - 1 : i + 2] = 1500
    writer = CohortWriter(tmp_path / "cohort")
    writer.write_image("marker", CTVolume(array, geom))
    writer.finish(
        DatasetInfo(
            "orientation",
            "marker",
            ["marker"],
            {"marker": "mediastinal"},
            SYNTHETIC_LICENSE,
            ["test"],
            "test",
        ),
        [],
    )
    dets = tmp_path / "dets.csv"
    x, y, z = geom.zyx_to_world(np.array([k, j, i], dtype=float))
    dets.write_text(f"seriesuid,coordX,coordY,coordZ,probability,diameter_mm\nmarker,{x},{y},{z},0.9,5\n")
    _, lps = reorient_to_lps(array, geom)
    kz, jy, ix = lps.world_to_voxel_zyx([x, y, z])
    nz, ny, nx = lps.shape_zyx
    # (rows, cols, row, col) of the marker in each pane, radiological convention (formats.md §1)
    expected = {
        "axial": (ny, nx, jy, ix),
        "coronal": (nz, nx, nz - 1 - kz, ix),
        "sagittal": (nz, ny, nz - 1 - kz, jy),
    }
    with _running(tmp_path / "cohort", dets, tmp_path / "out") as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{url}#case=marker")
            page.wait_for_function("() => window.__lymphcad && window.__lymphcad.ready === 'marker'")
            found = page.evaluate(
                """() => Object.fromEntries(Object.entries(window.__lymphcad.panes).map(([name, pane]) => {
                    const img = pane.img, d = img.data;
                    let best = -1, at = 0;
                    for (let p = 0; p < img.width * img.height; p++) if (d[4 * p] > best) { best = d[4 * p]; at = p; }
                    return [name, [img.height, img.width, Math.floor(at / img.width), at % img.width]];
                }))"""
            )
        finally:
            browser.close()
    for plane, (rows, cols, row, col) in expected.items():
        assert found[plane][:2] == [rows, cols], plane
        assert abs(found[plane][2] - row) <= 1 and abs(found[plane][3] - col) <= 1, (
            plane,
            found[plane],
            row,
            col,
        )
    # patient left on the image's right, anterior / superior up, sagittal anterior on the left
    assert expected["axial"][3] > nx / 2 and expected["axial"][2] < ny / 2
    assert expected["coronal"][2] < nz / 2 and expected["sagittal"][3] < ny / 2

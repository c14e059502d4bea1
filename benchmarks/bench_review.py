"""Benchmark of the review page (``lymphcad serve``) in headless Chromium (Debian's, driven by Playwright).

Measured, with targets from issue 14:
* slice redraw of a 512×512 axial slice, p95 ≤ 20 ms, and of a 512×512×600 coronal reformat, p95 ≤ 50 ms:
  ``performance.now()`` around one pane's full redraw (window through the lookup table, reformat,
  putImageData, scaled drawImage, overlays) closed by a 1-pixel read-back so the drawing has finished;
* first view of a 512×512×300 case ≤ 3 s after launch: from starting ``lymphcad serve`` (a new process)
  to the page showing the case's three panes (the browser is already open, as a reader's would be);
* review decisions survive ``kill -9`` of the server: decisions acknowledged over HTTP, the server
  killed at once, restarted, and the decisions counted.
References measured in the same run: reading the case's NIfTI with lymphcad's reader (the floor of any
first view) and the server-rendered PNG fallback of the same slices.

The cohort is synthetic (a body-shaped ellipse with noise, written here); no number is a detection result.
Run: ``.venv/bin/python benchmarks/bench_review.py [--out benchmarks/results/review.json]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from playwright.sync_api import Page, sync_playwright

from lymphcad import atomic
from lymphcad.citations import SYNTHETIC_LICENSE
from lymphcad.cohort import CohortWriter, DatasetInfo
from lymphcad.geometry import CTVolume
from lymphcad.io.nifti import read_nifti

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from review_fixtures import CHROMIUM, CHROMIUM_ARGS  # the tests' headless Chromium settings

CASES = {"ct300": (300, 512, 512), "ct600": (600, 512, 512)}


def synthetic_ct(shape_zyx: tuple[int, int, int], seed: int) -> CTVolume:
    """Air around an elliptic body of soft tissue with a few bright and dark blobs and noise (int16 HU)."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape_zyx
    yy, xx = np.mgrid[0:ny, 0:nx]
    body = ((yy - ny / 2) / (ny * 0.36)) ** 2 + ((xx - nx / 2) / (nx * 0.45)) ** 2 <= 1.0
    plane = np.where(body, 40, -1000).astype(np.int16)
    vol = np.empty(shape_zyx, dtype=np.int16)
    for k in range(nz):
        noise = rng.integers(-30, 31, size=(ny, nx), dtype=np.int16)
        vol[k] = plane + noise
        cy, cx = ny / 2 + 60 * np.sin(k / 40), nx / 2 + 80 * np.cos(k / 55)
        vol[k][(yy - cy) ** 2 + (xx - cx) ** 2 < 30**2] = 300
    return CTVolume.from_array(vol, spacing_zyx=(0.8, 0.7, 0.7), origin_xyz=(-179.0, -179.0, -400.0))


def make_cohort(root: Path) -> Path:
    """Write the two-case cohort (once; kept between runs in the temp folder)."""
    cohort = root / "cohort"
    if (cohort / "dataset.json").is_file():
        return cohort
    writer = CohortWriter(cohort)
    for i, (case_id, shape) in enumerate(CASES.items()):
        writer.write_image(case_id, synthetic_ct(shape, i))
    writer.finish(
        DatasetInfo(
            name="review-benchmark",
            description="synthetic volumes for the review page benchmark",
            cases=list(CASES),
            case_regions=dict.fromkeys(CASES, "abdominal"),
            license=SYNTHETIC_LICENSE,
            citation=["lymphcad review benchmark (synthetic)"],
            source="synthetic benchmark volumes",
        ),
        [],
    )
    dets = root / "dets.csv"
    rows = ["seriesuid,coordX,coordY,coordZ,probability,diameter_mm"]
    rng = np.random.default_rng(3)
    for case_id, (nz, _, _) in CASES.items():
        for _ in range(20):
            x, y = rng.uniform(-80, 80, 2)
            z = -400 + rng.uniform(10, nz * 0.8 - 10)
            rows.append(
                f"{case_id},{x:.2f},{y:.2f},{z:.2f},{rng.uniform(0.3, 1):.4f},{rng.uniform(8, 25):.1f}"
            )
    dets.write_text("\n".join(rows) + "\n")
    return cohort


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(cohort: Path, dets: Path, out: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "LYMPHCAD_NO_PROGRESS": "1"}
    cmd = [sys.executable, "-m", "lymphcad", "serve", str(cohort), "--dets", str(dets), "--out", str(out)]
    return subprocess.Popen(
        [*cmd, "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.01)
    raise RuntimeError("server did not start")


def open_case(page: Page, url: str, case_id: str) -> None:
    page.goto(f"{url}#case={case_id}")
    page.wait_for_function(
        f"() => window.__lymphcad && window.__lymphcad.ready === '{case_id}'", timeout=120_000
    )


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/review.json"))
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "lymphcad-bench-review")
    ap.add_argument("--repeats", type=int, default=3, help="first-view launches")
    ap.add_argument("--redraws", type=int, default=200)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    cohort = make_cohort(args.work)
    dets = args.work / "dets.csv"
    result: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_1min": os.getloadavg()[0],
        },
        "browser": "Debian chromium, headless, --disable-gpu (software canvas), viewport 1440×900, DPR 1",
        "data": "synthetic volumes (no detection result)",
    }
    t = time.perf_counter()
    read_nifti(cohort / "images" / "ct300.nii.gz")
    result["reference_read_nifti_512x512x300_s"] = round(time.perf_counter() - t, 3)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        # -- first view after launch
        first, listening = [], []
        for r in range(args.repeats):
            port = free_port()
            out = args.work / f"review_first_{r}"
            t0 = time.perf_counter()
            proc = start_server(cohort, dets, out, port)
            try:
                wait_port(port)
                listening.append(time.perf_counter() - t0)
                open_case(page, f"http://127.0.0.1:{port}/", "ct300")
                first.append(time.perf_counter() - t0)
            finally:
                proc.send_signal(signal.SIGINT)
                proc.wait(30)
        result["first_view_512x512x300_s"] = {
            "runs": [round(v, 3) for v in first],
            "median": round(statistics.median(first), 3),
            "target": 3.0,
        }
        result["first_view_breakdown_s"] = {
            "launch_to_listening": round(statistics.median(listening), 3),
            "listening_to_view": round(
                statistics.median(f - t for f, t in zip(first, listening, strict=True)), 3
            ),
        }
        result["first_view_over_nifti_read"] = round(
            statistics.median(first) / result["reference_read_nifti_512x512x300_s"], 2
        )

        # -- redraw timings on a warm server
        port = free_port()
        proc = start_server(cohort, dets, args.work / "review_redraw", port)
        try:
            wait_port(port)
            url = f"http://127.0.0.1:{port}/"
            open_case(page, url, "ct300")
            page.evaluate("(n) => window.__lymphcad.timeRedraw('axial', n)", 20)  # warm-up
            axial = page.evaluate("(n) => window.__lymphcad.timeRedraw('axial', n)", args.redraws)
            open_case(page, url, "ct600")
            page.evaluate("(n) => window.__lymphcad.timeRedraw('coronal', n)", 20)
            coronal = page.evaluate("(n) => window.__lymphcad.timeRedraw('coronal', n)", args.redraws)
            sagittal = page.evaluate("(n) => window.__lymphcad.timeRedraw('sagittal', n)", args.redraws)
            png = []
            with httpx.Client(base_url=url) as client:
                for i in range(40):
                    t = time.perf_counter()
                    client.get(
                        "/api/cases/ct600/slice.png", params={"plane": "coronal", "index": 100 + i}
                    ).raise_for_status()
                    png.append((time.perf_counter() - t) * 1000)
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)
        for name, times, target in (
            ("axial_512x512", axial, 20.0),
            ("coronal_512x512x600", coronal, 50.0),
            ("sagittal_512x512x600", sagittal, None),
        ):
            result[f"redraw_{name}_ms"] = {
                "p50": round(pct(times, 50), 2),
                "p95": round(pct(times, 95), 2),
                "max": round(max(times), 2),
                "n": len(times),
                "target_p95": target,
            }
        result["reference_server_png_coronal_512x600_ms"] = {
            "p50": round(pct(png, 50), 2),
            "p95": round(pct(png, 95), 2),
        }
        result["browser_over_server_png_coronal_p50"] = round(pct(coronal, 50) / pct(png, 50), 3)
        browser.close()

    # -- kill -9
    port = free_port()
    out = args.work / "review_kill"
    if out.exists():
        for f in out.iterdir():
            f.unlink()
    proc = start_server(cohort, dets, out, port)
    wait_port(port)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url) as client:
        token = re.search(r'name="lymphcad-token" content="([^"]+)"', client.get("/").text)
        assert token is not None
        headers = {"X-Lymphcad-Token": token.group(1)}
        n = 20
        for i in range(1, n + 1):
            action = "accept" if i % 2 else "reject"
            client.post(
                "/api/cases/ct300/decisions", json={"action": action, "finding_id": f"d{i}"}, headers=headers
            ).raise_for_status()
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    port = free_port()
    proc = start_server(cohort, dets, out, port)
    try:
        wait_port(port)
        state = httpx.get(f"http://127.0.0.1:{port}/api/cases/ct300/state").json()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    kept = sum(1 for f in state["findings"] if f["decision"] is not None)
    result["kill9"] = {"acknowledged": n, "after_restart": kept, "survived": kept == n}

    for key, value in result.items():
        print(f"{key}: {value}")
    atomic.write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

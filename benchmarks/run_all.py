"""Run every benchmark and regenerate the README's table of measured figures (``make bench``).

    python benchmarks/run_all.py            # the quick set (about 10 min on a quiet 2-core machine)
    python benchmarks/run_all.py --full     # every benchmark, the long ones too (an hour or more)
    python benchmarks/run_all.py --only batch detect
    python benchmarks/run_all.py --full --skip realism   # e.g. leave out a benchmark rerun elsewhere
    python benchmarks/run_all.py --table    # only rewrite the README table from benchmarks/results/*.json

Each benchmark is a script in ``benchmarks/`` that prints its figures and writes
``benchmarks/results/*.json`` with its reference measured in the same run (SimpleITK for reading, MONAI for
evaluation, the serial run for batch throughput, ...). A script found here that this file does not know
yet still runs (with its default arguments, in ``--full`` runs). The README's table between the markers
``<!-- bench:start -->`` and ``<!-- bench:end -->`` is rebuilt from the JSON files, one row per figure,
each with its source file and date; a benchmark skipped in a quick run keeps its last measured row.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
README = REPO / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"

Row = tuple[str, str, str]  # what, measured, reference in the same run
RowsFn = Callable[[dict[str, Any]], list[Row]]


@dataclass(frozen=True)
class Bench:
    """A benchmark script, its arguments in quick runs (None = only in --full runs) and its table rows."""

    name: str
    script: str
    quick_args: tuple[str, ...] | None
    results: tuple[str, ...]
    rows: RowsFn | None = None
    needs_shared: bool = False
    full_args: tuple[str, ...] = field(default_factory=tuple)


def _f(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}"


def _rows_read(d: dict[str, Any]) -> list[Row]:
    z, y, x = d["volume"]["shape_zyx"]
    u, j = d["results"]["uncompressed"], d["results"]["jpeg2000_lossless"]
    return [
        (
            f"read a {y}×{x}×{z} DICOM series, uncompressed",
            f"{_f(u['lymphcad_seconds'])} s",
            f"SimpleITK {_f(u['simpleitk_seconds'])} s (ratio {_f(u['ratio'])})",
        ),
        (
            "same, JPEG 2000 lossless",
            f"{_f(j['lymphcad_seconds'], 1)} s",
            f"SimpleITK {_f(j['simpleitk_seconds'], 1)} s (ratio {_f(j['ratio'])})",
        ),
    ]


def _rows_prepare(d: dict[str, Any]) -> list[Row]:
    runs = d["runs"]
    default1 = next(r for r in runs.values() if r["workers"] == 1 and r["default_for_these_workers"])
    return [
        (
            f"`prepare` {d['patients']} × 512×512×{d['slices_per_series']} series ({d['pixels']} pixels) → cohort, 1 worker",
            f"{default1['prepare']['mb_per_s']} MB/s",
            f"SimpleITK only reading: {default1['simpleitk']['mb_per_s']} MB/s (ratio {default1['ratio_per_worker_wall']})",
        )
    ]


def _rows_evaluate(d: dict[str, Any]) -> list[Row]:
    n = d["input"]
    return [
        (
            f"evaluate {n['n_cases']} volumes × {n['detections_per_case']} detections: matching + "
            f"{d['bootstrap_resamples']} bootstrap resamples",
            f"{_f(d['ours_match_plus_bootstrap_s'])} s",
            f"one MONAI FROC alone {_f(d['monai_one_froc_s'])} s",
        )
    ]


def _rows_detect(d: dict[str, Any]) -> list[Row]:
    return [
        (
            f"detect on a 512×512×300 CT (0.7×0.7×1.25 mm), file → detections, {d['threads']} threads, "
            f"network in {d.get('precision', 'float32')}",
            f"{_f(d['best_file_to_detections_s'], 1)} s, {_f(d['max_peak_rss_gb'])} GB peak",
            f"target ≤ {d['target']['seconds']} s, ≤ {d['target']['peak_rss_gb']} GB",
        )
    ]


def _rows_batch(d: dict[str, Any]) -> list[Row]:
    runs = d["runs"]
    w = next(k for k in runs if k.startswith("workers"))
    r = next(k for k in runs if k.startswith("ray"))
    n = w.removeprefix("workers")
    load = d["load_average_1_5_15"]
    what = (
        f"`detect` on {d['cases']} phantom CTs ({d['preset']} preset), whole command, network in "
        f"{d.get('precision', 'float32')}" + (", `--no-tta`" if d.get("no_tta") else ", the model's flip TTA")
    )
    amdahl = d.get("amdahl") or {}
    share = amdahl.get("workers_cpu_share")
    got = f"; the workers got {share:.2f} of a core each" if share is not None else ""
    pred = amdahl.get(f"{d['cases']}_cases")
    ideal = f"; predicted on 2 free cores ×{pred['speedup']} (from CPU-s)" if pred else ""
    start = d.get("ray_start_s")
    started = f"starting Ray {start} s" if start is not None else "starting Ray"
    without = d.get("ray_overhead_vs_workers_without_start")
    without_txt = (
        f"without {started}: {100 * without:+.0f} %"
        if without is not None
        else f"the batch alone: {100 * (d.get('ray_overhead_vs_workers_batch_only') or 0):+.0f} %"
    )
    return [
        (
            f"{what}, `--workers {n}`",
            f"{runs[w]['wall_s']} s = {d['cases_per_hour'][w]} CTs/h (×{d['speedup_workers_over_serial']} serial{ideal})",
            f"serial {runs['serial']['wall_s']} s (1 thread: {runs.get('serial_1_thread', {}).get('wall_s', '–')} s); "
            f"target ×1.6; load {load['before'][0]}→{load['after'][0]} on 2 cores{got}",
        ),
        (
            f"same, `--ray --workers {n}` (local Ray started and stopped)",
            f"{runs[r]['wall_s']} s ({100 * d['ray_overhead_vs_workers']:+.0f} % vs processes; {without_txt})",
            f"local processes {runs[w]['wall_s']} s; target ≤ +10 %"
            + (
                f"; CPU-s per case: Ray {runs[r]['timeline']['case_cpu_s']}, processes "
                f"{runs[w]['timeline']['case_cpu_s']}"
                if "timeline" in runs[r] and "timeline" in runs[w]
                else ""
            ),
        ),
    ]


def _rows_stages(d: dict[str, Any]) -> list[Row]:
    one, two = d["one_thread"], d["two_threads"]
    stages = ("read", "resample", "network", "peaks", "measure", "hash")
    a = d["amdahl_two_workers_over_one_2_thread_worker"]
    fmt = d.get("precision", "float32")
    return [
        (
            "one detected case (bench-preset phantom CT), CPU-s per stage, 1 thread: "
            + " / ".join(stages)
            + f" (network in {fmt})",
            " / ".join(f"{one[f'{s}_cpu']:.2f}" for s in stages) + f" = {one['case_cpu']:.2f} CPU-s",
            f"2 threads: network {two['network_wall']:.2f} s wall (1 thread {one['network_wall']:.2f} s, "
            f"×{d['network_speedup_2_threads_measured_here']}); network share f = "
            f"{d['network_share_of_one_thread_case_cpu']}: 2 workers ≤ ×{a['with_s_measured_here']} a 2-thread "
            "worker",
        )
    ]


def _rows_precision(d: dict[str, Any]) -> list[Row]:
    one, two, agree = d["1_thread"], d["2_threads"], d["agreement_1_thread"]
    strong = agree["detections_probability_ge_0_3"]
    cal = d.get("calibration")
    cal_txt = (
        f"; calibration CPM float32 {cal['float32']['cpm']} / bfloat16 {cal['bfloat16']['cpm']}"
        if cal
        else ""
    )
    return [
        (
            f"network stage of detect ({d['model']}, bench-preset phantom CT), bfloat16 (autocast, channels-last)",
            f"{one['bfloat16']['network_wall']:.2f} s on 1 thread (×{one['speedup_bfloat16']}), "
            f"{two['bfloat16']['network_wall']:.2f} s on 2 (×{two['speedup_bfloat16']})",
            f"float32 {one['float32']['network_wall']:.2f} / {two['float32']['network_wall']:.2f} s; detections ≥ 0.3: "
            f"{strong['matched_within_2mm']}/{strong['reference_detections']} the same, scores within "
            f"{strong['max_abs_score_change']}{cal_txt}",
        )
    ]


def _rows_deflate(d: dict[str, Any]) -> list[Row]:
    libs = d["volumes"]["real-ct"]["libraries"]
    isal, zlib = libs["isal level 1"], libs["zlib level 1"]
    return [
        (
            "deflate real CT (int16), one thread, ISA-L level 1",
            f"{isal['mb_per_cpu_s']} MB/CPU-s, size {isal['compressed_fraction']}",
            f"zlib level 1: {zlib['mb_per_cpu_s']} MB/CPU-s, size {zlib['compressed_fraction']}",
        )
    ]


def _rows_phantom(d: dict[str, Any]) -> list[Row]:
    bench = d["timing"]["bench"]
    cpu = sum(bench["cpu_s"]) / len(bench["cpu_s"])
    real = d["realism"]["0.5"]
    return [
        (
            "phantom case, bench preset (512²×240–320), one core",
            f"{_f(cpu, 1)} CPU-s per case",
            f"realism at d = 0.5: {real['candidates_needed_95']} blob candidates/volume for 95 % sensitivity (target 30–60)",
        )
    ]


def _rows_train_step(d: dict[str, Any]) -> list[Row]:
    s = d["settings"]["default"]
    p = "×".join(str(v) for v in s["patch_zyx"])
    return [
        (
            f"one training iteration (batch {s['batch']} × {p}), CPU",
            f"network step {min(s['step_s'].values())} s ({s['gflop_per_iteration']} GFLOP)",
            f"drawing the patches {s['sampling_cpu_s_per_batch']} CPU-s",
        )
    ]


def _rows_review(d: dict[str, Any]) -> list[Row]:
    fv, ax, co = (
        d["first_view_512x512x300_s"],
        d["redraw_axial_512x512_ms"],
        d["redraw_coronal_512x512x600_ms"],
    )
    return [
        (
            "review page (`serve`, headless Chromium): first view of a 512×512×300 case after launch",
            f"{fv['median']} s (target {fv['target']} s)",
            f"reading its NIfTI alone {d['reference_read_nifti_512x512x300_s']} s",
        ),
        (
            "same, slice redraw p95: axial 512×512 / coronal 512×512×600",
            f"{ax['p95']} ms / {co['p95']} ms (targets {ax['target_p95']} / {co['target_p95']}); "
            f"{d['kill9']['after_restart']}/{d['kill9']['acknowledged']} decisions survive `kill -9`",
            f"server-rendered PNG coronal p50 {d['reference_server_png_coronal_512x600_ms']['p50']} ms",
        ),
    ]


BENCHMARKS: tuple[Bench, ...] = (
    Bench("read_series", "bench_read_series.py", ("--repeats", "1"), ("read_series.json",), _rows_read),
    Bench("evaluate", "bench_evaluate.py", ("--repeats", "1"), ("evaluate.json",), _rows_evaluate),
    Bench("detect", "bench_detect.py", ("--repeats", "1"), ("detect_speed.json",), _rows_detect),
    Bench("batch", "bench_batch.py", (), ("batch.json",), _rows_batch),
    Bench(
        "batch_32",
        "bench_batch.py",
        None,
        ("batch_32.json",),
        _rows_batch,
        full_args=("--cases", "32", "--no-tta", "--out", str(RESULTS / "batch_32.json")),
    ),
    Bench(
        "batch_32_tta",
        "bench_batch.py",
        None,
        ("batch_32_tta.json",),
        _rows_batch,
        full_args=("--cases", "32", "--out", str(RESULTS / "batch_32_tta.json")),
    ),
    Bench("detect_stages", "bench_detect_stages.py", None, ("detect_stages.json",), _rows_stages),
    Bench("precision", "bench_precision.py", None, ("precision.json",), _rows_precision),
    Bench(
        "review", "bench_review.py", ("--repeats", "1", "--redraws", "100"), ("review.json",), _rows_review
    ),
    Bench("train_step", "bench_train_step.py", ("--repeats", "3"), ("train_step.json",), _rows_train_step),
    Bench(
        "deflate", "bench_deflate.py", ("--repeats", "1"), ("deflate.json",), _rows_deflate, needs_shared=True
    ),
    Bench(
        "prepare",
        "bench_prepare.py",
        None,
        ("prepare_real_ct.json",),
        _rows_prepare,
        needs_shared=True,
        full_args=("--pixels", "real-ct", "--out", str(RESULTS / "prepare_real_ct.json")),
    ),
    Bench("phantom", "bench_phantom.py", None, ("phantom.json",), _rows_phantom),
    Bench("phantom_counts", "bench_phantom_counts.py", None, ("phantom_counts.json",)),
    Bench("phantom_figure", "bench_phantom_figure.py", None, (), needs_shared=True),
)


def discover() -> list[Bench]:
    """The known benchmarks plus any other ``benchmarks/bench_*.py`` (run with defaults, in --full runs)."""
    known = {b.script for b in BENCHMARKS}
    extra = [
        Bench(p.stem.removeprefix("bench_"), p.name, None, ())
        for p in sorted(HERE.glob("bench_*.py"))
        if p.name not in known
    ]
    return [b for b in BENCHMARKS if (HERE / b.script).is_file()] + extra


def run(bench: Bench, full: bool) -> dict[str, Any]:
    """Run one benchmark script in a fresh process; returns its status."""
    args = bench.full_args if full or bench.quick_args is None else bench.quick_args
    cmd = [sys.executable, str(HERE / bench.script), *args]
    print(f"\n=== {bench.name}: {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=REPO, check=False)
    return {"name": bench.name, "rc": res.returncode, "seconds": round(time.perf_counter() - t0, 1)}


def _committed(path: Path) -> str:
    """The date of the last commit of a results file (its file time is the checkout's), else its mtime
    (a file just rewritten by a benchmark and not committed yet)."""
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if changed.stdout.strip():
        return time.strftime("%Y-%m-%d", time.gmtime(path.stat().st_mtime))
    res = subprocess.run(
        ["git", "log", "-1", "--format=%cs", "--", str(path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    return res.stdout.strip() or time.strftime("%Y-%m-%d", time.gmtime(path.stat().st_mtime))


def table_rows(benches: list[Bench]) -> list[str]:
    """Markdown rows of the README table from the results JSON files."""
    lines = [
        "| what | measured | reference in the same run | source |",
        "|---|---|---|---|",
    ]
    for b in benches:
        if b.rows is None:
            continue
        for name in b.results:
            path = RESULTS / name
            if not path.is_file():
                continue
            data = json.loads(path.read_text(encoding="utf-8"))
            try:
                rows = b.rows(data)
            except (KeyError, StopIteration, TypeError, ZeroDivisionError) as exc:
                print(f"warning: {name}: no table row ({exc.__class__.__name__}: {exc})", file=sys.stderr)
                continue
            when = str(data.get("time_utc", ""))[:10] or _committed(path)
            for what, measured, ref in rows:
                lines.append(f"| {what} | {measured} | {ref} | `results/{name}` {when} |")
    return lines


def write_table(benches: list[Bench]) -> None:
    """Replace the README's table between the markers."""
    text = README.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{README}: markers {START} / {END} not found")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    body = "\n".join(table_rows(benches))
    tmp = README.with_name(f".{README.name}.tmp")
    tmp.write_text(f"{head}{START}\n{body}\n{END}{tail}", encoding="utf-8")
    os.replace(tmp, README)
    print(f"README table rewritten from {RESULTS}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="also the long benchmarks")
    ap.add_argument("--only", nargs="+", default=None, help="these benchmarks (names as listed by --list)")
    ap.add_argument("--skip", nargs="+", default=(), help="not these benchmarks (names as listed by --list)")
    ap.add_argument("--table", action="store_true", help="only rewrite the README table")
    ap.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = ap.parse_args()
    benches = discover()
    if args.list:
        for b in benches:
            kind = "quick" if b.quick_args is not None else "long (--full)"
            print(f"{b.name:16s} {kind:14s} {b.script}")
        return
    if not args.table:
        shared = Path(os.environ.get("LYMPHCAD_SHARED", str(REPO.parent / "shared")))
        chosen = [
            b for b in benches if (args.only is None or b.name in args.only) and b.name not in args.skip
        ]
        if args.only or args.skip:
            unknown = (set(args.only or ()) | set(args.skip)) - {b.name for b in benches}
            if unknown:
                raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))} (see --list)")
        statuses = []
        t0 = time.perf_counter()
        for b in chosen:
            if b.quick_args is None and not args.full and args.only is None:
                print(f"--- {b.name}: long, skipped (run with --full); its last results stay in the table")
                continue
            if b.needs_shared and not (shared / "data").is_dir():
                print(f"--- {b.name}: skipped, needs the shared data folder ({shared}; set LYMPHCAD_SHARED)")
                continue
            statuses.append(run(b, args.full))
        print(f"\n{len(statuses)} benchmark(s) in {time.perf_counter() - t0:.0f} s:")
        for s in statuses:
            print(f"  {s['name']:16s} rc {s['rc']}  {s['seconds']} s")
        if any(s["rc"] for s in statuses):
            write_table(benches)
            raise SystemExit(1)
    write_table(benches)


if __name__ == "__main__":
    main()

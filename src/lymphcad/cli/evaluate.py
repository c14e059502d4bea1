"""``lymphcad evaluate``: FROC / CPM / AP of a detections CSV on a cohort (docs/formats.md)."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from lymphcad.cli._common import app, console, err_console, print_full_width
from lymphcad.cli._guards import check_distinct, check_input, check_output_file
from lymphcad.errors import InputError, UsageError
from lymphcad.evaluate.table import fmt


def _parse_radius(text: str) -> float | None:
    if text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--radius must be a number of mm or 'auto', not {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise UsageError(f"--radius must be positive, not {text!r}")
    return value


def _print_table(result: object) -> None:
    from rich.table import Table

    from lymphcad.evaluate.run import EvalResult
    from lymphcad.evaluate.table import metric_rows

    assert isinstance(result, EvalResult)
    rule = result.settings
    radius = "auto" if rule.radius_mm is None else f"{rule.radius_mm:g} mm"
    table = Table(
        title=f"lymphcad evaluate — {result.source or 'cohort'}\nmatch={rule.match.value}, radius={radius}, "
        f"duplicates={rule.duplicates.value}, boxes={'nnDetection' if rule.nndet_boxes else 'world'}",
        title_justify="left",
    )
    blocks = [("pooled", result.pooled), *result.regions.items(), *result.by_size.items()]
    shown = [(name, b) for name, b in blocks if name == "pooled" or b.n_nodes > 0]
    table.add_column("")
    for name, _ in shown:
        table.add_column(name, justify="right")

    for label, cells in metric_rows(shown):
        table.add_row(label, *cells)
    hidden = [name for name, b in blocks if (name, b) not in shown]
    print_full_width(table)
    no_ap = [name for name, b in shown if b.ap[0] is None]
    if no_ap:
        from lymphcad.evaluate.explain import ap_reason

        console.print(f"AP n/a ({', '.join(no_ap)}): {ap_reason(result)}", markup=False, soft_wrap=True)
    if hidden:
        console.print(f"No nodes in: {', '.join(hidden)} (null in eval.json).", markup=False)
    console.print(
        "Sensitivity at k FP/volume: numpy.interp on the pooled curve; CPM = mean at 1/8…8 (3 and 6 not averaged).",
        markup=False,
    )
    _print_published()
    if result.citation:
        console.print("Cite:", markup=False)
        for c in result.citation:
            console.print(f"  {c}", markup=False)


def _print_measurement(result: object, reliability_png: Path) -> None:
    """Size agreement and calibration lines, and the reliability diagram beside eval.json."""
    from lymphcad.evaluate.run import EvalResult
    from lymphcad.measure.agreement import calibration_block
    from lymphcad.report.reliability_plot import plot_reliability

    assert isinstance(result, EvalResult)
    sizes = result.size_agreement_json()
    if sizes is not None:
        s = sizes["short_axis"]
        lo, hi = s["bland_altman_limits_mm"]
        console.print(
            f"Short axis vs truth ({s['n']} true positives): MAE {fmt(s['mean_absolute_error_mm'], 2)} mm, "
            f"median |error| {fmt(s['median_absolute_error_mm'], 2)} mm, Bland–Altman {fmt(lo, 2)} … "
            f"{fmt(hi, 2)} mm",
            markup=False,
        )
    block = calibration_block(*result.hit_labels())
    console.print(
        f"Calibration: ECE (10 bins) {fmt(block['ece_10_bins'])} over {block['n_detections']} detections "
        f"({block['n_hits']} node hits); reliability diagram {reliability_png}",
        markup=False,
    )
    plot_reliability(block, reliability_png, title=f"Reliability — {result.source or 'cohort'}")


def _print_published() -> None:
    """Published numbers for comparison, in a table of their own that says they are not this run."""
    from rich.table import Table

    from lymphcad.evaluate.literature import OPERATING_POINTS, PUBLISHED_AP, PUBLISHED_LABEL, SOURCE_DOC

    table = Table(
        title=f"For comparison — {PUBLISHED_LABEL} (not this run; {SOURCE_DOC})", title_justify="left"
    )
    for col in ("method", "region", "metric", "value"):
        table.add_column(col, justify="right" if col == "value" else "left")
    for p in OPERATING_POINTS:
        table.add_row(p.method, p.region, f"sens @{p.fp_per_volume:g} FP/vol", f"{p.sensitivity:.3f}")
    for a in PUBLISHED_AP:
        table.add_row(a.method, a.region, f"AP @IoU {a.iou:g}", f"{a.ap:.3f}")
    print_full_width(table)


@app.command("evaluate")
def evaluate_cmd(
    cohort: Path = typer.Argument(..., help="Cohort folder (dataset.json, annotations.csv, labels/, ...)."),
    detections: Path = typer.Argument(
        ..., help="Detections CSV (seriesuid,coordX,coordY,coordZ,probability,diameter_mm; docs/formats.md)."
    ),
    out: Path = typer.Option(..., "--out", help="eval.json to write (matches.csv is written beside it)."),
    plot: Path | None = typer.Option(None, "--plot", help="Also draw the FROC plot to this PNG."),
    match: str = typer.Option("mask-or-radius", "--match", help="Hit rule: mask | radius | mask-or-radius."),
    radius: str = typer.Option(
        "auto", "--radius", help="Hit radius in mm, or auto = max(5, short/2, else long/2)."
    ),
    duplicates: str = typer.Option(
        "ignore", "--duplicates", help="Further hits on a node: ignore (LUNA16) | fp (nnDetection)."
    ),
    ignore: Path | None = typer.Option(
        None, "--ignore", help="ignore.csv to use instead of the cohort's own."
    ),
    nndet_boxes: bool = typer.Option(
        False, "--nndet-boxes", help="AP ground truth = nnDetection's padded voxel boxes."
    ),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", min=0, help="Bootstrap resamples over cases (0 = no CI)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
) -> None:
    """FROC at 1/8…8 FP/volume, CPM with bootstrap CI, and box AP at IoU 0.1/0.5 — pooled, per region, per size.

    Writes eval.json and matches.csv (described in docs/formats.md).
    """
    check_input(cohort, "COHORT")
    check_input(detections, "DETECTIONS")
    inputs = [cohort, detections, *([] if ignore is None else [check_input(ignore, "--ignore")])]
    outputs = {
        "--out": out,
        "matches.csv": out.parent / "matches.csv",
        "reliability.png": out.parent / "reliability.png",
    }
    check_output_file(out, "--out", suffixes=(".json",), inputs=inputs)
    check_output_file(
        outputs["matches.csv"], "--out (matches.csv beside it)", suffixes=(".csv",), inputs=inputs
    )
    check_output_file(
        outputs["reliability.png"], "--out (reliability.png beside it)", suffixes=(".png",), inputs=inputs
    )
    if plot is not None:
        outputs["--plot"] = check_output_file(plot, "--plot", suffixes=(".png",), inputs=inputs)
    check_distinct(outputs)
    from lymphcad.cohort import open_cohort, read_ignore
    from lymphcad.evaluate.run import evaluate_cohort, write_outputs
    from lymphcad.evaluate.settings import DuplicatePolicy, EvalSettings, MatchRule
    from lymphcad.io.checks import count_duplicate_detections
    from lymphcad.io.detections import read_detections

    try:
        rule = MatchRule(match)
    except ValueError:
        raise UsageError(
            f"--match must be one of {', '.join(m.value for m in MatchRule)}, not {match!r}"
        ) from None
    try:
        dup = DuplicatePolicy(duplicates)
    except ValueError:
        raise UsageError(f"--duplicates must be ignore or fp, not {duplicates!r}") from None
    settings = EvalSettings(
        match=rule,
        radius_mm=_parse_radius(radius),
        duplicates=dup,
        nndet_boxes=nndet_boxes,
        bootstrap=bootstrap,
        seed=seed,
    )
    if not (cohort / "annotations.csv").is_file():
        raise InputError(
            "missing: evaluate needs the cohort's ground-truth nodes (docs/formats.md, a cohort on disk)",
            cohort / "annotations.csv",
        )
    co = open_cohort(cohort)
    dets = read_detections(detections, known_cases=co.info.cases)
    dupes = count_duplicate_detections(dets.case_ids, dets.centers_xyz, dets.probabilities)
    if dupes:
        err_console.print(
            f"warning: {detections}: {dupes} row(s) repeat an earlier row exactly (same case, position and "
            "probability); each counts as a separate detection and changes the result",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    points = None if ignore is None else read_ignore(ignore, known_cases=co.info.cases)
    result = evaluate_cohort(co, dets, settings, ignore=points)
    eval_path, matches_path = write_outputs(result, out)
    _print_table(result)
    _print_measurement(result, outputs["reliability.png"])
    err_console.print(f"wrote {eval_path} and {matches_path}")
    if plot is not None:
        from lymphcad.report.froc_plot import plot_froc

        plot_froc(result, plot)
        err_console.print(f"wrote {plot}")

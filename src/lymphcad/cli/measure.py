"""``lymphcad calibrate``: fit the probability calibration of a model on a validation fold's detections."""

from __future__ import annotations

from pathlib import Path

import typer

from lymphcad.cli._common import app, console, err_console
from lymphcad.cli._guards import check_input, check_output_file
from lymphcad.errors import UsageError


@app.command("calibrate")
def calibrate_cmd(
    cohort: Path = typer.Argument(..., help="Cohort folder with ground truth (formats.md §2)."),
    detections: Path = typer.Argument(..., help="Raw-score detections CSV of it (detect --raw-scores)."),
    split: Path | None = typer.Option(
        None, "--split", help="splits.json: fit on --fold's validation cases (default: every case)."
    ),
    fold: int = typer.Option(0, "--fold", help="Fold of --split whose 'val' cases are used."),
    model: str | None = typer.Option(
        None, "--model", help="Model folder (or model.pt): write calibration.json beside it."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Calibration JSON to write (instead of beside --model)."
    ),
    method: str = typer.Option("isotonic", "--method", help="isotonic (default) | temperature."),
) -> None:
    """Fit the map raw score → probability that the detection hits a node, on cases the model never trained on."""
    if method not in ("isotonic", "temperature"):
        raise UsageError(f"--method must be isotonic or temperature, not {method!r}")
    if (model is None) == (out is None):
        raise UsageError("give exactly one of --model (write beside the model) or --out")
    check_input(cohort, "COHORT")
    check_input(detections, "DETECTIONS")
    from lymphcad.cohort import open_cohort
    from lymphcad.detector.model import resolve_model_path
    from lymphcad.io.detections import read_detections
    from lymphcad.measure.calibration import calibration_beside
    from lymphcad.measure.fit import check_raw, fit_on_fold, fold_cases

    target = out if out is not None else calibration_beside(resolve_model_path(model))
    check_output_file(
        target, "--out" if out is not None else "--model", suffixes=(".json",), inputs=[cohort, detections]
    )
    check_raw(detections)
    co = open_cohort(cohort)
    cases = fold_cases(co, split, fold)
    dets = read_detections(detections, known_cases=co.info.cases)
    where = f"{co.info.name or cohort.name}" + ("" if split is None else f", fold {fold} of {split.name}")
    try:
        fit = fit_on_fold(co, dets, cases=cases, method=method, source=f"{where} ({len(cases)} cases)")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    fit.calibration.save(target)
    cal = fit.calibration
    console.print(
        f"{cal.method} calibration from {cal.n_detections} detections ({cal.n_hits} node hits) of "
        f"{len(cases)} case(s): ECE {fit.ece_raw:.3f} raw → {fit.ece_calibrated:.3f} calibrated (on the fitting set)",
        markup=False,
    )
    err_console.print(f"wrote {target}")

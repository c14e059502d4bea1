"""Reproduce the default model's training chain with one command (issue 12: "reproducible by one command").

    python release/reproduce_default_model.py [--work benchmarks/_work/real_model] [--name NAME] [--dry-run]

The shipped default ``centernet3d_realmix_v10`` is an ensemble of two networks: v8, the end of a chain of
warm-started runs of ``release/train_real_model.py`` (its docstring explains each), and a branch run
(run_v17) warm-started from v8 on cohorts drawn with the keep-size placement, with the slice-thickness
augmentation. This script runs that chain from the shipped ``centernet3d_realmix_v4`` package — v5's run
started from v4's float32 weights, which the package holds as float16, so the chain starts from the same
weights up to that rounding — then the branch, writes the ensemble of the two chosen epochs, calibrates it and
ships it under ``--name`` (default ``centernet3d_realmix_v10_repro``: a shipped package is never overwritten).
Each step is skipped when its output exists and each training step resumes its own checkpoints, so an
interrupted call continues where it stopped. The cohort folders are drawn by the first training call that
names them, with the recipe's seeds.

Cost on the project's 2-core machine (one torch thread), measured on 2026-12-07 with benchmarks running
beside it: 70 min of training steps (run_v10 ends at the epoch the stop rule chose, ``--stop-at-epoch 60``
of its 120-epoch schedule, however often it is resumed), and drawing three cohort folders, loading,
validation and calibration on top: about 2 h 10 min of wall-clock time in all, in two pieces (one
interruption, resumed). Its result was measured against v8 (``benchmarks/results/realism_v8_repro_vs_v8.json``).
The branch and the ensemble add about 7 min of training (run_v17: 30 epochs), two cohort folders and a
calibration of two networks with flip TTA (about 15 min on the same machine).
The chain before v5 (v3, v4) trained on cohorts of an older
insertion code and is not re-run: v4's shipped weights are the starting point.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from lymphcad.detector.model import shipped_models

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "release" / "train_real_model.py"
#: the insertion settings every training call of the chain shares
COMMON = ("--formation", "additive,texture", "--insert-cases", "16", "--mine-skip-node-like")


@dataclass(frozen=True)
class Step:
    """One training run of the chain: its folder, data, schedule, start weights and the epoch it hands on."""

    run: str
    data: str
    epochs: int
    init_from: str  # a path relative to --work ("RUN/snapshots/epoch_N") or to the repository ("src/...")
    keep_epoch: int  # the epoch the stop rule chose (the next step starts from it)
    elastic: float = 0.0
    stop_after: int | None = None  # end the run at this epoch of its schedule (resumes included)
    keep_size: bool = False  # draw its cohort folders with the keep-size placement
    thick: float = 0.0  # share of patches blurred along z (slice-thickness augmentation)


#: v5 → v6 → v7 → v8 (docstring of release/train_real_model.py)
CHAIN: tuple[Step, ...] = (
    Step("run_v8", "data_v7", 60, "src/lymphcad/models/centernet3d_realmix_v4", 40),
    Step("run_v10", "data_v7,data_v9", 120, "run_v8/snapshots/epoch_0040", 60, stop_after=60),
    Step("run_v11", "data_v7,data_v9,data_v11", 60, "run_v10/snapshots/epoch_0060", 60),
    Step("run_v12", "data_v7,data_v9,data_v11", 60, "run_v11/snapshots/epoch_0060", 60, elastic=0.5),
    Step("run_v14", "data_v7,data_v9,data_v11", 60, "run_v12/snapshots/epoch_0060", 60, elastic=0.5),
)
#: v10's second member: warm-started from v8's weights on keep-size cohorts with the slice-thickness
#: augmentation, a 30-epoch schedule (its stop rule chose the last epoch: sphere score 0.76)
BRANCH: Step = Step(
    "run_v17",
    "data_v12,data_v13",
    30,
    "run_v14/snapshots/epoch_0060",
    30,
    elastic=0.5,
    keep_size=True,
    thick=0.5,
)
#: the ensemble's run folder, its members (run, epoch) and the calibration cohorts it is fitted on
ENSEMBLE: str = "ens_v8_v17e30"
CALIBRATION: str = "calibration_v9"


def snapshot_dir(work: Path, run: str, epoch: int) -> Path:
    """Where a run keeps the weights of a validated epoch."""
    return work / run / "snapshots" / f"epoch_{epoch:04d}"


def _train_args(work: Path, step: Step) -> list[str]:
    init = step.init_from if step.init_from.startswith("src/") else str(work / step.init_from)
    args = ["--work", str(work), "--run", step.run, "--data", step.data, *COMMON]
    args += ["--epochs", str(step.epochs), "--init-from", init]
    if step.elastic > 0:
        args += ["--elastic", str(step.elastic)]
    if step.stop_after is not None:
        args += ["--stop-at-epoch", str(step.stop_after)]
    if step.keep_size:
        args.append("--keep-size")
    if step.thick > 0:
        args += ["--thick", str(step.thick)]
    return args


def commands(work: Path, name: str) -> list[tuple[Path, list[str]]]:
    """Every call of the chain with the file whose existence means it is done."""
    out: list[tuple[Path, list[str]]] = []
    for step in (*CHAIN, BRANCH):
        out.append((snapshot_dir(work, step.run, step.keep_epoch) / "model.pt", _train_args(work, step)))
    members = ",".join(f"{s.run}:{s.keep_epoch}" for s in (CHAIN[-1], BRANCH))
    ens = ["--work", str(work), "--run", ENSEMBLE]
    model = work / ENSEMBLE / "model"
    out.append((model / "model.pt", [*ens, "--ensemble", members]))
    out.append(
        (
            model / "calibration.json",
            [*ens, "--tta", "--calibrate", "--calibration", CALIBRATION, "--keep-size"],
        )
    )
    out.append((REPO / "src" / "lymphcad" / "models" / name / "model.pt", [*ens, "--tta", "--ship", name]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=REPO / "benchmarks" / "_work" / "real_model")
    ap.add_argument(
        "--name", default="centernet3d_realmix_v10_repro", help="package name to ship the result as"
    )
    ap.add_argument(
        "--dry-run", action="store_true", help="print the calls (and which are done), run nothing"
    )
    args = ap.parse_args(argv)
    if args.name in shipped_models():
        print("--name: the shipped package is never overwritten; choose another name", file=sys.stderr)
        return 2
    try:
        for done_when, call in commands(args.work.resolve(), args.name):
            line = " ".join(["python", "release/train_real_model.py", *call])
            if done_when.exists():
                print(f"done: {line}", flush=True)
                continue
            print(f"{'would run' if args.dry_run else 'run'}: {line}", flush=True)
            if not args.dry_run:
                subprocess.run([sys.executable, str(TRAIN), *call], check=True, cwd=REPO)
    except subprocess.CalledProcessError as exc:
        print(f"{TRAIN.name}: a step failed (exit {exc.returncode}); rerun to continue", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; rerun to continue", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

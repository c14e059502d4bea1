"""The one-command reproduction of the default model's training chain (release/reproduce_default_model.py)."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

from lymphcad.cohort import DatasetInfo
from lymphcad.detector.model import DEFAULT_MODEL
from script_loader import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "release" / "reproduce_default_model.py"


def _load() -> ModuleType:
    return load_script(SCRIPT, "reproduce_default_model")


def test_chain_hands_each_chosen_epoch_to_the_next_run() -> None:
    mod = _load()
    chain = mod.CHAIN
    assert chain[0].init_from == "src/lymphcad/models/centernet3d_realmix_v4"
    for prev, step in itertools.pairwise(chain):
        assert step.init_from == f"{prev.run}/snapshots/epoch_{prev.keep_epoch:04d}"
        # a cut schedule still reaches the epoch it hands on
        assert step.keep_epoch <= (step.stop_after or step.epochs)
    # the branch starts from the chain's end, and the default's model card names both as its members
    assert mod.BRANCH.init_from == f"{chain[-1].run}/snapshots/epoch_{chain[-1].keep_epoch:04d}"
    assert mod.BRANCH.keep_size and (mod.BRANCH.stop_after or mod.BRANCH.epochs) >= mod.BRANCH.keep_epoch
    card = (SCRIPT.parents[1] / "src" / "lymphcad" / "models" / DEFAULT_MODEL / "model_card.md").read_text()
    for i, step in enumerate((chain[-1], mod.BRANCH), 1):
        assert f"Member {i}: the weights of run `{step.run}` at epoch {step.keep_epoch}" in card


def test_dry_run_lists_the_calls_and_skips_finished_steps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mod = _load()
    assert mod.main(["--work", str(tmp_path), "--dry-run", "--name", "test_repro_never_shipped"]) == 0
    lines = capsys.readouterr().out.splitlines()
    # the chain, the branch, then ensemble, calibration and ship
    assert len(lines) == len(mod.CHAIN) + 4 and all(line.startswith("would run:") for line in lines)
    assert "--elastic 0.5" in lines[len(mod.CHAIN) - 1] and "--stop-at-epoch 60" in lines[1]
    assert "--keep-size" in lines[-4] and "--thick 0.5" in lines[-4] and "--keep-size" not in lines[0]
    assert "--ensemble run_v14:60,run_v17:30" in lines[-3]
    assert "--calibrate --calibration calibration_v9 --keep-size" in lines[-2] and "--ship" in lines[-1]
    assert not any(tmp_path.iterdir())  # nothing was run or drawn
    # the first run's chosen snapshot exists: that step is done, the rest still to run
    snap = tmp_path / "run_v8" / "snapshots" / "epoch_0040"
    snap.mkdir(parents=True)
    (snap / "model.pt").write_bytes(b"")
    assert mod.main(["--work", str(tmp_path), "--dry-run", "--name", "test_repro_never_shipped"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("done:") and all(line.startswith("would run:") for line in lines[1:])


def test_the_shipped_package_is_never_overwritten(capsys: pytest.CaptureFixture[str]) -> None:
    mod = _load()
    assert mod.main(["--dry-run", "--name", "centernet3d_realmix_v8"]) == 2
    assert "never overwritten" in capsys.readouterr().err


def test_a_cohort_folder_keeps_the_placement_it_was_drawn_with(tmp_path: Path) -> None:
    """``train_real_model --keep-size`` draws new folders with the keep-size placement; a folder drawn with the
    other placement stops the call with its path, rather than mixing the two into one training set."""
    sys.path.insert(0, str(SCRIPT.parent))
    mod = load_script(SCRIPT.parent / "train_real_model.py", "train_real_model")
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    new.mkdir()
    for root, insertion in ((old, {"seed": 1}), (new, {"seed": 1, "placement": "keep-size"})):
        # the layout insert_cohort writes: DatasetInfo.extra lands at the top level of dataset.json
        info = DatasetInfo("c", "d", [], {}, "CC0", ["Cite: test"], "test", extra={"insertion": insertion})
        (root / "dataset.json").write_text(json.dumps(info.to_json()), encoding="utf-8")
    assert not mod.drawn_keep_size(old) and mod.drawn_keep_size(new)
    mod._check_placement(old, False)
    mod._check_placement(new, True)
    mod._check_placement(tmp_path / "not_drawn_yet", True)
    with pytest.raises(SystemExit, match="old: drawn without the keep-size placement"):
        mod._check_placement(old, True)
    with pytest.raises(SystemExit, match="new: drawn with the keep-size placement"):
        mod._check_placement(new, False)

"""``make bench``'s README table (benchmarks/run_all.py): every committed results file of a benchmark that
has a table row gives its rows (a row function that no longer fits its JSON would drop the row silently)."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from script_loader import load_script

REPO = Path(__file__).resolve().parents[2]


def _run_all() -> ModuleType:
    return load_script(REPO / "benchmarks" / "run_all.py", "bench_run_all")


def test_every_results_file_gives_its_rows(capsys: pytest.CaptureFixture[str]) -> None:
    run_all = _run_all()
    benches = run_all.discover()
    lines = run_all.table_rows(benches)
    assert "warning" not in capsys.readouterr().err  # no row function failed on its JSON
    for b in benches:
        if b.rows is None:
            continue
        for name in b.results:
            if (run_all.RESULTS / name).is_file():
                assert any(f"`results/{name}`" in line for line in lines), name
    batch = [line for line in lines if "`results/batch.json`" in line]
    assert len(batch) == 2 and "--workers 2" in batch[0] and "--ray --workers 2" in batch[1]

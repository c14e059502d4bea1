"""The batch engine's scheduling and timing pieces: largest cases first, each worker's use of the batch's
time, and local workers that start importing (forkserver preload) before the driver has a task for them,
with one intra-op and one inter-op torch thread each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from lymphcad.batch.engine import (
    BatchReport,
    Executor,
    Outcome,
    Task,
    TaskFn,
    WorkerSpec,
    largest_first,
    run_batch,
    worker_loads,
)

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"


def test_largest_first_orders_by_size_and_keeps_ties_in_order() -> None:
    sizes = {"a": 5, "b": 9, "c": 5, "d": 1, "e": 9}
    tasks = [Task(k, k) for k in "abcde"]
    assert [t.key for t in largest_first(tasks, lambda t: sizes[t.key])] == ["b", "e", "a", "c", "d"]
    assert largest_first([], lambda t: 0) == []


def test_worker_loads_account_for_every_second_of_the_batch() -> None:
    t0 = 1000.0
    report = BatchReport(started=t0, ended=t0 + 10.0)
    report.outcomes = [
        # worker A: set-up 0.5 s after waiting 1 s, two tasks with 0.5 s between them, done at 8.0
        Outcome("1", True, seconds=3.0, worker="A", started=t0 + 1.5, cpu_seconds=2.8, setup_seconds=0.5),
        Outcome("3", True, seconds=3.0, worker="A", started=t0 + 5.0, cpu_seconds=2.9),
        # worker B: one failed attempt then a success, back to back, finishing at the end of the batch
        Outcome("2", False, seconds=4.0, worker="B", started=t0 + 2.0, cpu_seconds=3.9, setup_seconds=2.0),
        Outcome("2", True, seconds=4.0, worker="B", started=t0 + 6.0, cpu_seconds=4.0),
    ]
    a, b = worker_loads(report)
    assert (a.worker, a.tasks, a.busy_s, a.cpu_s, a.setup_s) == ("A", 2, 6.0, 5.7, 0.5)
    assert (a.before_first_s, a.between_s, a.after_last_s) == (1.0, 0.5, 2.0)
    assert (b.worker, b.tasks, b.busy_s, b.setup_s) == ("B", 2, 8.0, 2.0)
    assert (b.before_first_s, b.between_s, b.after_last_s) == (0.0, 0.0, 0.0)
    for w in (a, b):  # waiting + set-up + busy + idle = the batch's wall clock
        total = w.before_first_s + w.setup_s + w.busy_s + w.between_s + w.after_last_s
        assert abs(total - 10.0) < 1e-6


_WARM_UP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from lymphcad.batch.engine import Task
    from lymphcad.batch.executors import ProcessExecutor
    from batch_helpers import ThreadProbeSpec

    probe = Path(os.environ["LYMPHCAD_TEST_PRELOAD_PROBE"])
    ex = ProcessExecutor(2, 1, preload=("batch_preload_probe",))
    t0 = time.time()
    ex.warm_up()
    warm_up_s = time.time() - t0
    deadline = time.time() + 60
    while not probe.is_file() and time.time() < deadline:
        time.sleep(0.05)
    imported_before_any_task = probe.is_file()
    ex.start(ThreadProbeSpec())
    results = []
    try:
        for i in range(4):
            ex.submit(Task(str(i), i))
        while len(results) < 4:
            results += [o.result for o in ex.wait()]
    finally:
        ex.close()
    print(json.dumps({
        "driver": os.getpid(),
        "driver_imported_it": "batch_preload_probe" in sys.modules,
        "warm_up_s": warm_up_s,
        "imported_before_any_task": imported_before_any_task,
        "results": results,
    }))
    """
)


def test_warm_up_starts_the_workers_imports_before_any_task_with_one_thread_each(tmp_path: Path) -> None:
    probe = tmp_path / "probe.txt"
    env = {
        **os.environ,
        "LYMPHCAD_TEST_PRELOAD_PROBE": str(probe),
        "PYTHONPATH": os.pathsep.join([str(SRC), str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    res = subprocess.run(
        [sys.executable, "-c", _WARM_UP_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    # the forkserver imported the preload module on its own, before the driver submitted anything, and
    # warm_up did not wait for that import
    assert out["imported_before_any_task"] and not out["driver_imported_it"]
    assert out["warm_up_s"] < 5.0
    importers = [int(line.split()[0]) for line in probe.read_text(encoding="utf-8").splitlines()]
    assert len(importers) == 1 and importers[0] != out["driver"]  # once, in the server: workers inherit it
    workers = {pid for pid, _, _, _ in out["results"]}
    assert 1 <= len(workers) <= 2 and out["driver"] not in workers
    for _pid, preloaded, intra, interop in out["results"]:
        assert preloaded  # forked from the server after its import: no import of its own
        assert (intra, interop) == (1, 1)


class _RecordingExecutor(Executor):
    """Two workers with one queued task each (as the Ray executor); records tasks in flight at each submit
    and finishes the oldest task at each wait."""

    capacity = 4
    slots = 2

    def __init__(self) -> None:
        self.queue: list[Task] = []
        self.in_flight_at_submit: list[int] = []

    def start(self, spec: WorkerSpec) -> None:
        del spec

    def submit(self, task: Task) -> None:
        self.in_flight_at_submit.append(len(self.queue))
        self.queue.append(task)

    def wait(self) -> list[Outcome]:
        return [Outcome(self.queue.pop(0).key, True)]

    def close(self) -> None:
        self.queue.clear()

    def describe(self) -> str:
        return "recording"


class _NoSpec:
    def setup(self, threads: int) -> TaskFn:
        raise AssertionError("not used by the recording executor")


def test_last_cases_wait_for_a_free_worker_instead_of_queueing() -> None:
    """Tasks queue behind running ones only while more cases remain than workers: the last ones go to the
    worker that frees up first (a Ray actor's own queue would hold one behind a long case while another
    actor idles)."""
    ex = _RecordingExecutor()
    tasks = [Task(f"c{i}", i) for i in range(8)]
    report = run_batch(tasks, _NoSpec(), ex, on_result=lambda o: None)
    assert sorted(report.done) == sorted(t.key for t in tasks)
    # the first four fill two running slots and two queue places; the last two are only submitted
    # when a worker is free (at most 2 in flight, i.e. none queued)
    assert ex.in_flight_at_submit[:4] == [0, 1, 2, 3]
    assert ex.in_flight_at_submit[-2:] == [1, 1]
    assert max(ex.in_flight_at_submit[-2:]) < ex.slots

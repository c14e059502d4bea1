"""The batch engine: one task per case, run by an executor, each finished case kept on disk at once.

A batch is a list of :class:`Task` (a unique key, usually the case id, and a picklable payload) and a
:class:`WorkerSpec`, a small picklable recipe that each worker turns *once* into the function that handles
one payload (loading a model is done there, so it happens once per worker process, not once per case).
:func:`run_batch` feeds the tasks to an executor (:mod:`lymphcad.batch.executors`: serial, local
processes, Ray actors), retries a failing task up to ``retries`` more times, and hands every finished case
to the caller's ``on_result`` as soon as it arrives, so the caller can write it to a :class:`PartStore`.

A :class:`PartStore` is the work folder of a run (``dets.csv.parts/`` beside ``dets.csv``): one record per
finished case, written atomically and last (it is the case's commit marker), holding the run's
fingerprint (a hash of the model and the settings) and the identity of the case's input. A rerun skips the
cases whose record matches both, so an interrupted batch resumes and a changed model or input is redone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from lymphcad import atomic
from lymphcad.errors import LymphcadError

#: one task's payload → its result (built by :meth:`WorkerSpec.setup` in each worker)
TaskFn = Callable[[Any], Any]
RECORD_SUFFIX: Final = ".done.json"
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,150}$")


class WorkerSpec(Protocol):
    """A picklable recipe for a worker: ``setup`` runs once per worker and returns the per-task function."""

    def setup(self, threads: int) -> TaskFn:
        """Load what the tasks need (a model, ...) using ``threads`` CPU threads; return the task function."""
        ...


@dataclass(frozen=True)
class Task:
    """One unit of work: ``key`` names it (unique in the batch, e.g. the case id); ``payload`` is picklable."""

    key: str
    payload: Any


@dataclass(frozen=True)
class Outcome:
    """What a worker sends back for one task: the result, or a one-line error."""

    key: str
    ok: bool
    result: Any = None
    error: str = ""
    seconds: float = 0.0
    worker: str = ""
    #: when the task started in the worker (seconds since the epoch) and the worker's CPU seconds for it
    started: float = 0.0
    cpu_seconds: float = 0.0
    #: building the worker's task function (model load, ...) just before this task: its first task only
    setup_seconds: float = 0.0


class Executor(ABC):
    """Runs tasks on workers built from a spec. ``capacity``: tasks it accepts at once; ``slots``: tasks
    that run at once (one per worker). Tasks beyond ``slots`` wait in a worker's own queue (Ray) or a shared
    one (processes)."""

    capacity: int = 1
    slots: int = 1

    def warm_up(self) -> None:
        """Start what needs no spec yet (worker processes importing their modules, a local Ray), so that it
        overlaps the driver's own imports, model check and input scan; :meth:`start` does the rest. The
        default does nothing (a serial run has nothing to start)."""
        return None

    @abstractmethod
    def start(self, spec: WorkerSpec) -> None:
        """Get the workers ready (they build their task function from ``spec``)."""

    @abstractmethod
    def submit(self, task: Task) -> None:
        """Queue one task (the engine never submits more than ``capacity`` at once)."""

    @abstractmethod
    def wait(self) -> list[Outcome]:
        """Block until at least one submitted task has finished; return the finished ones."""

    @abstractmethod
    def close(self) -> None:
        """Stop the workers (also after Ctrl-C or an error; unfinished tasks are dropped)."""

    @abstractmethod
    def describe(self) -> str:
        """One line for reports: kind, workers, threads per worker."""


@dataclass(frozen=True)
class Failure:
    """A task that failed on every attempt (a row of failures.csv)."""

    key: str
    error: str
    attempts: int


@dataclass(frozen=True)
class BatchProgress:
    """Counts for a progress display: done (this run), skipped (finished earlier), failed, total."""

    done: int
    skipped: int
    failed: int
    total: int
    elapsed_s: float

    @property
    def per_minute(self) -> float:
        """Cases finished per minute in this run (skipped ones excluded)."""
        return 60.0 * self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class BatchReport:
    """Outcome of :func:`run_batch`."""

    done: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    #: from the executor being ready (a local Ray started, ...) to the last case
    seconds: float = 0.0
    #: getting the executor ready (starting a local Ray or joining a cluster; processes start lazily)
    start_seconds: float = 0.0
    executor: str = ""
    #: per finished key: seconds spent in the worker
    task_seconds: dict[str, float] = field(default_factory=dict)
    #: every outcome (failed attempts too), in the order they arrived, and the batch's start/end (epoch s)
    outcomes: list[Outcome] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0


class BatchAborted(LymphcadError):
    """A task failed on every attempt and the batch was not told to keep going."""


def one_line_error(exc: BaseException) -> str:
    """An exception as one line: the message of a LymphcadError, else ``Type: message``."""
    text = str(exc) if isinstance(exc, LymphcadError) else f"{exc.__class__.__name__}: {exc}"
    return " ".join(text.split()) or exc.__class__.__name__


def run_task(fn: TaskFn, task: Task) -> Outcome:
    """Run one task in a worker and catch its error (the batch goes on; the driver decides on retries)."""
    started, t0, c0 = time.time(), time.perf_counter(), time.process_time()
    worker = f"{os.uname().nodename}:{os.getpid()}"

    def timed(ok: bool, result: Any = None, error: str = "") -> Outcome:
        return Outcome(
            task.key,
            ok,
            result,
            error,
            seconds=time.perf_counter() - t0,
            worker=worker,
            started=started,
            cpu_seconds=time.process_time() - c0,
        )

    try:
        result = fn(task.payload)
    except Exception as exc:
        if os.environ.get("LYMPHCAD_BATCH_TRACEBACK") == "1":
            traceback.print_exc()
        return timed(False, error=one_line_error(exc))
    return timed(True, result)


def run_batch(
    tasks: Sequence[Task],
    spec: WorkerSpec,
    executor: Executor,
    *,
    on_result: Callable[[Outcome], None],
    retries: int = 1,
    keep_going: bool = True,
    skipped: int = 0,
    on_progress: Callable[[BatchProgress], None] | None = None,
    on_failure: Callable[[Failure], None] | None = None,
) -> BatchReport:
    """Run ``tasks`` on ``executor``; ``on_result`` gets each successful outcome as soon as it arrives.

    A task that fails is queued again (at the end) up to ``retries`` times; then it is a :class:`Failure`.
    With ``keep_going`` the others go on; without it the run stops at once and :class:`BatchAborted` is
    raised (results already handed to ``on_result`` stay written). ``skipped`` only feeds the progress
    counts (cases finished by an earlier run). Ctrl-C stops the executor and propagates.
    """
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise LymphcadError(f"two inputs map to the same case id: {', '.join(dup[:5])}")
    by_key = {t.key: t for t in tasks}
    pending = deque(tasks)
    attempts: dict[str, int] = dict.fromkeys(by_key, 0)
    report = BatchReport()
    total = len(tasks) + skipped
    t0 = time.perf_counter()
    in_flight = 0

    def progress() -> None:
        if on_progress is not None:
            on_progress(
                BatchProgress(
                    len(report.done), skipped, len(report.failures), total, time.perf_counter() - t0
                )
            )

    progress()
    if not tasks:
        return report
    executor.start(spec)
    report.executor = executor.describe()
    report.start_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    report.started = time.time()
    try:
        while pending or in_flight:
            while pending and in_flight < executor.capacity:
                if in_flight >= executor.slots and len(pending) <= executor.slots:
                    # the last cases wait for a free worker instead of queueing behind a busy one (a Ray
                    # actor's queue is its own: a case queued there waits while another actor idles)
                    break
                task = pending.popleft()
                attempts[task.key] += 1
                executor.submit(task)
                in_flight += 1
            for out in executor.wait():
                in_flight -= 1
                report.outcomes.append(out)
                if out.ok:
                    on_result(out)
                    report.done.append(out.key)
                    report.task_seconds[out.key] = out.seconds
                elif attempts[out.key] <= retries:
                    pending.append(by_key[out.key])
                else:
                    failure = Failure(out.key, out.error, attempts[out.key])
                    report.failures.append(failure)
                    if on_failure is not None:
                        on_failure(failure)
                    if not keep_going:
                        raise BatchAborted(
                            f"case {out.key} failed after {failure.attempts} attempt(s): {out.error}"
                        )
                progress()
    finally:
        executor.close()
    report.seconds = time.perf_counter() - t0
    report.ended = time.time()
    return report


@dataclass(frozen=True)
class WorkerLoad:
    """How one worker spent a batch: tasks run, busy and CPU seconds, waiting before its first task, idle
    between tasks and after its last one (the batch's tail), all in seconds of wall-clock time."""

    worker: str
    tasks: int
    busy_s: float
    cpu_s: float
    setup_s: float
    before_first_s: float
    between_s: float
    after_last_s: float


def worker_loads(report: BatchReport) -> list[WorkerLoad]:
    """Each worker's use of the batch's wall-clock time (from :attr:`BatchReport.outcomes`)."""
    by_worker: dict[str, list[Outcome]] = {}
    for out in report.outcomes:
        by_worker.setdefault(out.worker, []).append(out)
    loads = []
    for worker, outs in sorted(by_worker.items()):
        outs = sorted(outs, key=lambda o: o.started)
        busy = sum(o.seconds for o in outs)
        first = outs[0].started - outs[0].setup_seconds - report.started
        last = report.ended - (outs[-1].started + outs[-1].seconds)
        span = outs[-1].started + outs[-1].seconds - (outs[0].started - outs[0].setup_seconds)
        loads.append(
            WorkerLoad(
                worker,
                len(outs),
                round(busy, 3),
                round(sum(o.cpu_seconds for o in outs), 3),
                round(sum(o.setup_seconds for o in outs), 3),
                round(max(0.0, first), 3),
                round(max(0.0, span - busy - sum(o.setup_seconds for o in outs)), 3),
                round(max(0.0, last), 3),
            )
        )
    return loads


def fingerprint(data: Any) -> str:
    """A short stable hash of JSON-able settings (the model's hash, the detection settings, ...)."""
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def path_identity(path: str | Path) -> str:
    """A cheap identity of an input file or folder: size and modification time of every file in it.

    Good enough to notice that an input was replaced between a run and its resumption, without reading it.
    """
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for dirpath, dirnames, filenames in os.walk(p):
            dirnames.sort()
            for name in sorted(filenames):
                f = Path(dirpath) / name
                with contextlib.suppress(OSError):
                    st = f.stat()
                    h.update(f"{f.relative_to(p)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    else:
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def path_bytes(path: str | Path) -> int:
    """Bytes of an input file, or of all files in an input folder (0 when it cannot be read): the size of a
    case, to start the largest ones first."""
    p = Path(path)
    if not p.is_dir():
        try:
            return p.stat().st_size
        except OSError:
            return 0
    total = 0
    for dirpath, _dirs, filenames in os.walk(p):
        for name in filenames:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / name).stat().st_size
    return total


def largest_first(tasks: Sequence[Task], size: Callable[[Task], int]) -> list[Task]:
    """The tasks ordered by decreasing size, ties in their given order: with several workers the long cases
    start first and the short ones fill in at the end, so no worker is left alone on a long case while the
    others sit idle (longest-processing-time-first scheduling)."""
    sizes = [size(t) for t in tasks]
    order = sorted(range(len(tasks)), key=lambda i: -sizes[i])
    return [tasks[i] for i in order]


def safe_name(key: str) -> str:
    """A file name for a task key: the key itself when it is plain, else a cleaned key plus a short hash."""
    if _SAFE_KEY.match(key):
        return key
    clean = re.sub(r"[^A-Za-z0-9_.\-]+", "_", key).strip("._")[:100] or "case"
    return f"{clean}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:10]}"


class PartStore:
    """The work folder of a batch: per-case files plus a record per finished case (written last)."""

    def __init__(self, root: str | Path, run_fingerprint: str) -> None:
        self.root = Path(root)
        self.fingerprint = run_fingerprint

    def create(self) -> None:
        """Create the folder (an unwritable location fails here, before any work)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise LymphcadError(f"cannot write the batch's work folder ({exc.strerror})", self.root) from exc

    def path(self, key: str, suffix: str) -> Path:
        """Where a case's file with ``suffix`` (e.g. ``.csv``) lives."""
        return self.root / f"{safe_name(key)}{suffix}"

    def record(self, key: str, input_id: str) -> dict[str, Any] | None:
        """The record of a case finished with this fingerprint and this input, else None."""
        p = self.path(key, RECORD_SUFFIX)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict):
            return None
        if data.get("key") != key or data.get("fingerprint") != self.fingerprint:
            return None
        if data.get("input") != input_id:
            return None
        files = data.get("files", [])
        if not all(isinstance(f, str) and (self.root / f).is_file() for f in files):
            return None
        return data

    def commit(self, key: str, input_id: str, files: Iterable[str], info: dict[str, Any]) -> None:
        """Mark a case finished: its ``files`` (names in the folder, already written) and ``info``."""
        atomic.write_json(
            self.path(key, RECORD_SUFFIX),
            {
                "key": key,
                "fingerprint": self.fingerprint,
                "input": input_id,
                "files": sorted(files),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **info,
            },
        )

    def remove(self, suffixes: Sequence[str]) -> None:
        """Delete the records, the case files ending in ``suffixes`` and stray temporaries, then the folder."""
        if not self.root.is_dir():
            return
        for f in self.root.iterdir():
            name = f.name
            ours = name.endswith((RECORD_SUFFIX, *suffixes)) or (name.startswith(".") and ".tmp" in name)
            if f.is_file() and ours:
                f.unlink()
        with contextlib.suppress(OSError):
            self.root.rmdir()  # only when nothing else is left in it


def prune_empty(folder: Path) -> None:
    """Remove a work folder that holds nothing (a run stopped before any case finished)."""
    with contextlib.suppress(OSError):
        folder.rmdir()


def write_failures(path: str | Path, failures: Sequence[Failure]) -> None:
    """failures.csv: case, error, attempts (sorted by case)."""
    atomic.write_csv(
        path,
        ("case", "error", "attempts"),
        ([f.key, f.error, f.attempts] for f in sorted(failures, key=lambda f: f.key)),
    )


def write_timeline(path: Path, report: BatchReport, marks: dict[str, float], executor: Executor) -> None:
    """A JSON timeline of a batch (for benchmarks): the caller's steps (epoch seconds), the executor's start
    figures, each worker's load (:func:`worker_loads`) and each task (worker, start, wall, CPU, setup)."""
    extra = {
        name: round(float(getattr(executor, name)), 3)
        for name in ("init_seconds", "actor_seconds")
        if hasattr(executor, name)
    }
    atomic.write_json(
        path,
        {
            "executor": report.executor,
            "marks": {k: round(v, 3) for k, v in marks.items()},
            "batch_started": round(report.started, 3),
            "batch_ended": round(report.ended, 3),
            "start_seconds": round(report.start_seconds, 3),
            "executor_start": extra,
            "workers": [dataclasses.asdict(w) for w in worker_loads(report)],
            "tasks": [
                {
                    "key": o.key,
                    "ok": o.ok,
                    "worker": o.worker,
                    "started": round(o.started, 3),
                    "seconds": round(o.seconds, 3),
                    "cpu_seconds": round(o.cpu_seconds, 3),
                    "setup_seconds": round(o.setup_seconds, 3),
                }
                for o in report.outcomes
            ],
        },
    )

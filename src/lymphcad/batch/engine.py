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


class Executor(ABC):
    """Runs tasks on workers built from a spec. ``capacity``: tasks it accepts at once."""

    capacity: int = 1

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


class BatchAborted(LymphcadError):
    """A task failed on every attempt and the batch was not told to keep going."""


def one_line_error(exc: BaseException) -> str:
    """An exception as one line: the message of a LymphcadError, else ``Type: message``."""
    text = str(exc) if isinstance(exc, LymphcadError) else f"{exc.__class__.__name__}: {exc}"
    return " ".join(text.split()) or exc.__class__.__name__


def run_task(fn: TaskFn, task: Task) -> Outcome:
    """Run one task in a worker and catch its error (the batch goes on; the driver decides on retries)."""
    t0 = time.perf_counter()
    worker = f"{os.uname().nodename}:{os.getpid()}"
    try:
        result = fn(task.payload)
    except Exception as exc:
        if os.environ.get("LYMPHCAD_BATCH_TRACEBACK") == "1":
            traceback.print_exc()
        return Outcome(
            task.key, False, error=one_line_error(exc), seconds=time.perf_counter() - t0, worker=worker
        )
    return Outcome(task.key, True, result=result, seconds=time.perf_counter() - t0, worker=worker)


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
    try:
        while pending or in_flight:
            while pending and in_flight < executor.capacity:
                task = pending.popleft()
                attempts[task.key] += 1
                executor.submit(task)
                in_flight += 1
            for out in executor.wait():
                in_flight -= 1
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
    return report


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

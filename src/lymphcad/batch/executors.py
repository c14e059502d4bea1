"""Where batch tasks run: in this process, in local worker processes, or on Ray actors.

Every executor turns the :class:`~lymphcad.batch.engine.WorkerSpec` into a task function once per worker
(so a model is loaded once per worker, not once per case) and gives each worker ``threads`` CPU threads:
with N workers on C cores, C // N each (at least 1), so the workers together fill the machine without
oversubscribing it.

- :class:`SerialExecutor`: one worker, this process. The reference for results and throughput.
- :class:`ProcessExecutor`: ``--workers N`` local processes (forkserver: one server process imports the
  worker's modules once and forks the workers from it). A worker that dies (killed, out of memory) fails its
  task; the pool is rebuilt and the batch goes on.
- :class:`RayExecutor`: ``--ray [ADDRESS]``, one actor per worker. ``auto`` or an address joins a running
  cluster; no address starts a local Ray with this machine's CPUs (small object store, no dashboard) and
  stops it at the end. An actor may ask for GPUs (``gpus_per_worker``).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import lymphcad
from lymphcad.batch.engine import Executor, Outcome, Task, TaskFn, WorkerSpec, one_line_error, run_task
from lymphcad.errors import UsageError

#: object store of a Ray started by lymphcad: the tasks pass small payloads and results only
RAY_OBJECT_STORE_BYTES: Final = 128 * 1024 * 1024


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cpus: int | None = None) -> int:
    """CPU threads for each of ``workers`` workers sharing ``cpus`` cores: cpus // workers, at least 1."""
    n = usable_cpus() if cpus is None else cpus
    return max(1, n // max(1, workers))


class SerialExecutor(Executor):
    """One worker in this process: the reference run."""

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads if threads is not None else usable_cpus()
        self.capacity = 1
        self._fn: TaskFn | None = None
        self._queue: deque[Task] = deque()

    def start(self, spec: WorkerSpec) -> None:
        self._fn = spec.setup(self.threads)

    def submit(self, task: Task) -> None:
        self._queue.append(task)

    def wait(self) -> list[Outcome]:
        assert self._fn is not None, "start() first"
        return [run_task(self._fn, self._queue.popleft())]

    def close(self) -> None:
        self._queue.clear()

    def describe(self) -> str:
        return f"serial (1 worker x {self.threads} thread(s))"


# -- local processes ----------------------------------------------------------------------------------------
_WORKER_CACHE: dict[tuple[Any, int], TaskFn] = {}


def _init_process_worker() -> None:
    # Ctrl-C goes to the whole process group: the driver handles it and stops the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _process_task(spec: WorkerSpec, threads: int, task: Task) -> Outcome:
    """Runs in a worker process: build the task function on first use (kept for the process's life)."""
    key = (spec, threads)
    fn = _WORKER_CACHE.get(key)
    if fn is None:
        try:
            fn = spec.setup(threads)
        except Exception as exc:
            return Outcome(task.key, False, error=f"worker setup failed: {one_line_error(exc)}")
        _WORKER_CACHE.clear()
        _WORKER_CACHE[key] = fn
    return run_task(fn, task)


class ProcessExecutor(Executor):
    """``workers`` local processes; each builds its task function once and keeps it."""

    def __init__(self, workers: int, threads: int | None = None, preload: tuple[str, ...] = ()) -> None:
        if workers < 1:
            raise UsageError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self.threads = threads if threads is not None else threads_per_worker(workers)
        self.preload = preload
        # one task queued behind each running one, so a worker never waits for the driver
        self.capacity = 2 * workers
        self._pool: ProcessPoolExecutor | None = None
        self._spec: WorkerSpec | None = None
        self._futures: dict[Future[Outcome], Task] = {}

    def _new_pool(self) -> ProcessPoolExecutor:
        ctx = mp.get_context("forkserver")
        if self.preload:
            ctx.set_forkserver_preload(list(self.preload))
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_init_process_worker)

    def start(self, spec: WorkerSpec) -> None:
        self._spec = spec
        self._pool = self._new_pool()

    def submit(self, task: Task) -> None:
        assert self._spec is not None, "start() first"
        if self._pool is None:  # rebuilt after a worker died
            self._pool = self._new_pool()
        self._futures[self._pool.submit(_process_task, self._spec, self.threads, task)] = task

    def wait(self) -> list[Outcome]:
        done, _ = wait(list(self._futures), return_when=FIRST_COMPLETED)
        outcomes = []
        broken = False
        for fut in done:
            task = self._futures.pop(fut)
            try:
                outcomes.append(fut.result())
            except BrokenProcessPool:
                broken = True
                outcomes.append(
                    Outcome(task.key, False, error="a worker process died (killed or out of memory)")
                )
            except Exception as exc:  # the task or its result could not be pickled
                outcomes.append(Outcome(task.key, False, error=f"{exc.__class__.__name__}: {exc}"))
        if broken and self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        return outcomes

    def close(self) -> None:
        pool, self._pool = self._pool, None
        self._futures.clear()
        if pool is None:
            return
        procs = list(getattr(pool, "_processes", {}).values())  # stop running tasks too (Ctrl-C, abort)
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(timeout=10)

    def describe(self) -> str:
        return f"local processes ({self.workers} worker(s) x {self.threads} thread(s))"


# -- Ray ---------------------------------------------------------------------------------------------------
class _ActorBody:
    """The body of a Ray actor: builds the task function once, then runs tasks."""

    def __init__(self, spec: WorkerSpec, threads: int) -> None:
        self.spec = spec
        self.threads = threads
        self.fn: TaskFn | None = None

    def run(self, task: Task) -> Outcome:
        if self.fn is None:
            try:
                self.fn = self.spec.setup(self.threads)
            except Exception as exc:
                return Outcome(task.key, False, error=f"worker setup failed: {one_line_error(exc)}")
        return run_task(self.fn, task)


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'lymphcad[ray]'") from None
    return ray


def start_local_ray(num_cpus: int) -> None:
    """Start a Ray on this machine for this process: ``num_cpus`` CPUs, a small object store, no dashboard.

    Its workers import lymphcad from where this process does (the same code, also from a source checkout).
    """
    ray = _import_ray()
    src = str(Path(lymphcad.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        num_cpus=num_cpus,
        object_store_memory=RAY_OBJECT_STORE_BYTES,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )


@dataclass
class _Actor:
    handle: Any
    busy: Task | None = None


class RayExecutor(Executor):
    """One Ray actor per worker. ``address``: None = start a local Ray (stopped at the end); ``auto`` or
    ``HOST:PORT`` / ``ray://...`` = join that cluster. A Ray already started in this process is reused."""

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        threads: int | None = None,
        gpus_per_worker: float = 0.0,
    ) -> None:
        if workers is not None and workers < 1:
            raise UsageError(f"--workers must be >= 1, got {workers}")
        if gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
        self.address = address
        self.workers = workers
        self.threads = threads
        self.gpus = gpus_per_worker
        self.capacity = 1
        self._ray: Any = None
        self._owned = False
        self._actor_cls: Any = None
        self._spec: WorkerSpec | None = None
        self._actors: list[_Actor] = []
        self._refs: dict[Any, _Actor] = {}

    def start(self, spec: WorkerSpec) -> None:
        ray = self._ray = _import_ray()
        if not ray.is_initialized():
            if self.address:
                try:
                    ray.init(
                        address=self.address,
                        include_dashboard=False,
                        log_to_driver=False,
                        logging_level=logging.ERROR,
                    )
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise UsageError(
                        f"--ray {self.address}: cannot join a Ray cluster there ({one_line_error(exc)}); "
                        "start one with 'ray start --head', or give --ray alone for a local Ray"
                    ) from None
            else:
                n = self.workers or usable_cpus()
                start_local_ray(max(usable_cpus(), n * (self.threads or threads_per_worker(n))))
            self._owned = True
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        if self.workers is None:
            self.workers = max(1, cluster_cpus // (self.threads or 1))
        if self.threads is None:
            self.threads = threads_per_worker(self.workers, cluster_cpus)
        self._spec = spec
        self._actor_cls = ray.remote(num_cpus=self.threads, num_gpus=self.gpus)(_ActorBody)
        self._actors = [_Actor(self._actor_cls.remote(spec, self.threads)) for _ in range(self.workers)]
        self.capacity = self.workers

    def submit(self, task: Task) -> None:
        actor = next(a for a in self._actors if a.busy is None)
        actor.busy = task
        self._refs[actor.handle.run.remote(task)] = actor

    def wait(self) -> list[Outcome]:
        ray = self._ray
        ready, _ = ray.wait(list(self._refs), num_returns=1)
        outcomes = []
        for ref in ready:
            actor = self._refs.pop(ref)
            task = actor.busy
            assert task is not None
            actor.busy = None
            try:
                outcomes.append(ray.get(ref))
            except ray.exceptions.RayActorError:  # the actor died: replace it
                outcomes.append(Outcome(task.key, False, error="a Ray worker died (killed or out of memory)"))
                actor.handle = self._actor_cls.remote(self._spec, self.threads)
            except ray.exceptions.RayError as exc:
                outcomes.append(Outcome(task.key, False, error=f"Ray: {exc.__class__.__name__}"))
        return outcomes

    def close(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for a in self._actors:
            with contextlib.suppress(Exception):  # already gone
                ray.kill(a.handle)
        self._actors = []
        self._refs.clear()
        if self._owned:
            ray.shutdown()
            self._owned = False

    def describe(self) -> str:
        where = "local Ray" if not self.address else f"Ray at {self.address}"
        gpus = f", {self.gpus:g} GPU(s) each" if self.gpus else ""
        return f"{where} ({self.workers} actor(s) x {self.threads} thread(s){gpus})"


def make_executor(
    *,
    workers: int = 1,
    ray: str | None = None,
    threads: int | None = None,
    gpus_per_worker: float = 0.0,
    preload: tuple[str, ...] = (),
) -> Executor:
    """The executor the CLI options ask for: ``ray`` (None = not Ray, ``""`` = local Ray, ``auto`` or an
    address = join a cluster), else ``workers`` processes (1 = serial, in this process)."""
    if ray is not None:
        return RayExecutor(ray or None, workers if workers > 1 else None, threads, gpus_per_worker)
    if gpus_per_worker:
        raise UsageError("--gpus-per-worker applies to --ray runs")
    if workers <= 1:
        return SerialExecutor(threads)
    return ProcessExecutor(workers, threads, preload)

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

:meth:`~lymphcad.batch.engine.Executor.warm_up`, called before the driver imports the worker's modules
itself, starts the forkserver (or Ray and its actors) at once: their imports (torch, about 2 CPU-s) then run
on another core while the driver imports, checks the model and scans the inputs. Each worker queues one
task behind the running one, so it never waits for the driver between cases.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing as mp
import multiprocessing.forkserver
import os
import signal
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
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


def preload_modules(modules: tuple[str, ...]) -> None:
    """Import a worker's modules ahead of its first task (a Ray actor's start, like the forkserver's preload)."""
    for name in modules:
        importlib.import_module(name)


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
    setup_s = 0.0
    if fn is None:
        t0 = time.perf_counter()
        try:
            fn = spec.setup(threads)
        except Exception as exc:
            return Outcome(task.key, False, error=f"worker setup failed: {one_line_error(exc)}")
        setup_s = time.perf_counter() - t0
        _WORKER_CACHE.clear()
        _WORKER_CACHE[key] = fn
    return replace(run_task(fn, task), setup_seconds=setup_s)


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
        self.slots = workers
        self._pool: ProcessPoolExecutor | None = None
        self._spec: WorkerSpec | None = None
        self._futures: dict[Future[Outcome], Task] = {}

    def _new_pool(self) -> ProcessPoolExecutor:
        ctx = mp.get_context("forkserver")
        if self.preload:
            ctx.set_forkserver_preload(list(self.preload))
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx, initializer=_init_process_worker)

    def warm_up(self) -> None:
        """Start the forkserver now: it imports the preload modules while the driver goes on (the workers,
        forked from it when the first tasks come, then start with everything imported)."""
        if self.preload:
            mp.get_context("forkserver").set_forkserver_preload(list(self.preload))
        multiprocessing.forkserver.ensure_running()

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
    """The body of a Ray actor: imports the worker's modules when created, builds the task function once
    (:meth:`prepare`), then runs tasks in the order they were sent."""

    def __init__(self, preload: tuple[str, ...], threads: int) -> None:
        preload_modules(preload)
        self.threads = threads
        self.fn: TaskFn | None = None
        self.error = ""
        self.setup_seconds = 0.0

    def prepare(self, spec: WorkerSpec) -> None:
        t0 = time.perf_counter()
        try:
            self.fn = spec.setup(self.threads)
        except Exception as exc:
            self.fn, self.error = None, f"worker setup failed: {one_line_error(exc)}"
        self.setup_seconds = time.perf_counter() - t0

    def run(self, task: Task) -> Outcome:
        if self.fn is None:
            return Outcome(task.key, False, error=self.error or "worker setup failed")
        out = replace(run_task(self.fn, task), setup_seconds=self.setup_seconds)
        self.setup_seconds = 0.0
        return out


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs Ray: pip install 'lymphcad[ray]'") from None
    return ray


@contextlib.contextmanager
def _environment(**values: str) -> Iterator[None]:
    """Set environment variables for what this block starts (a local Ray's processes inherit them)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start_local_ray(num_cpus: int) -> None:
    """Start a Ray on this machine for this process with the fewest parts: ``num_cpus`` CPUs, a small object
    store, no dashboard, no log forwarding, no usage report, and an empty runtime environment (its workers
    inherit this process's ``PYTHONPATH``, so they import lymphcad from where this process does, also from a
    source checkout, and Ray needs no runtime-environment set-up before starting them)."""
    ray = _import_ray()
    src = str(Path(lymphcad.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    with _environment(PYTHONPATH=path, RAY_USAGE_STATS_ENABLED="0"):
        ray.init(
            num_cpus=num_cpus,
            object_store_memory=RAY_OBJECT_STORE_BYTES,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
            configure_logging=False,
        )


@dataclass
class _Actor:
    handle: Any
    queued: int = 0


@dataclass
class _RayState:
    """What a started RayExecutor holds: the actor class, the actors and the tasks sent to them."""

    actor_cls: Any
    actors: list[_Actor] = field(default_factory=list)
    refs: dict[Any, tuple[_Actor, Any, Task]] = field(default_factory=dict)


class RayExecutor(Executor):
    """One Ray actor per worker. ``address``: None = start a local Ray (stopped at the end); ``auto`` or
    ``HOST:PORT`` / ``ray://...`` = join that cluster. A Ray already started in this process is reused.
    Each actor imports ``preload`` when created (:meth:`warm_up`) and has one task queued behind its
    running one."""

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        threads: int | None = None,
        gpus_per_worker: float = 0.0,
        preload: tuple[str, ...] = (),
    ) -> None:
        if workers is not None and workers < 1:
            raise UsageError(f"--workers must be >= 1, got {workers}")
        if gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
        self.address = address
        self.workers = workers
        self.threads = threads
        self.gpus = gpus_per_worker
        self.preload = preload
        self.capacity = 1
        self._ray: Any = None
        self._owned = False
        self._state: _RayState | None = None
        self._spec: WorkerSpec | None = None
        #: seconds spent starting (or joining) Ray and creating the actors
        self.init_seconds = 0.0
        self.actor_seconds = 0.0

    def _connect(self) -> Any:
        ray = _import_ray()
        if ray.is_initialized():
            return ray
        if self.address:
            try:
                ray.init(
                    address=self.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                    configure_logging=False,
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
        return ray

    def warm_up(self) -> None:
        """Start (or join) Ray and create the actors; they import ``preload`` while the driver goes on."""
        if self._state is not None:
            return
        t0 = time.perf_counter()
        ray = self._ray = self._connect()
        self.init_seconds = time.perf_counter() - t0
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        if self.workers is None:
            self.workers = max(1, cluster_cpus // (self.threads or 1))
        if self.threads is None:
            self.threads = threads_per_worker(self.workers, cluster_cpus)
        cls = ray.remote(num_cpus=self.threads, num_gpus=self.gpus)(_ActorBody)
        state = _RayState(cls)
        state.actors = [_Actor(cls.remote(self.preload, self.threads)) for _ in range(self.workers)]
        self._state = state
        self.capacity = 2 * self.workers
        self.slots = self.workers
        self.actor_seconds = time.perf_counter() - t0 - self.init_seconds

    def start(self, spec: WorkerSpec) -> None:
        self.warm_up()
        assert self._state is not None
        self._spec = spec
        for actor in self._state.actors:
            actor.handle.prepare.remote(spec)

    def submit(self, task: Task) -> None:
        assert self._state is not None, "start() first"
        actor = min(self._state.actors, key=lambda a: a.queued)
        actor.queued += 1
        self._state.refs[actor.handle.run.remote(task)] = (actor, actor.handle, task)

    def wait(self) -> list[Outcome]:
        ray, state = self._ray, self._state
        assert state is not None, "start() first"
        ready, _ = ray.wait(list(state.refs), num_returns=1)
        outcomes = []
        for ref in ready:
            actor, handle, task = state.refs.pop(ref)
            actor.queued -= 1
            try:
                outcomes.append(ray.get(ref))
            except ray.exceptions.RayActorError:  # the actor died: replace it (once)
                outcomes.append(Outcome(task.key, False, error="a Ray worker died (killed or out of memory)"))
                if actor.handle is handle:
                    actor.handle = state.actor_cls.remote(self.preload, self.threads)
                    actor.handle.prepare.remote(self._spec)
            except ray.exceptions.RayError as exc:
                outcomes.append(Outcome(task.key, False, error=f"Ray: {exc.__class__.__name__}"))
        return outcomes

    def close(self) -> None:
        ray, state = self._ray, self._state
        if ray is None:
            return
        if state is not None:
            for a in state.actors:
                with contextlib.suppress(Exception):  # already gone
                    ray.kill(a.handle)
        self._state = None
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
        return RayExecutor(ray or None, workers if workers > 1 else None, threads, gpus_per_worker, preload)
    if gpus_per_worker:
        raise UsageError("--gpus-per-worker applies to --ray runs")
    if workers <= 1:
        return SerialExecutor(threads)
    return ProcessExecutor(workers, threads, preload)

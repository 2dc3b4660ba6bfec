"""Where SUMO runs happen: one interface, local processes or a Dask cluster.

Every simulation the project runs (the gate's candidate and incumbent on
several seeds, ``traffic sim run --seeds``, replay variants, the benchmarks,
and a partitioned city's regions) is a :class:`SimTask`: a *description as
data* of one run (scenario files, control or plans, seed, window). An
executor takes a batch of tasks and returns one :class:`SimResult` per task,
in order, as plain data (KPIs as a dict, optional per-edge measures). The
executor never sees a Python closure or a live object, so the same task runs
in a local process or on a worker of another machine.

Executors (:func:`executor_from_settings`, ``[executor]`` in ``traffic.toml``):

* :class:`LocalProcessExecutor` (``kind = "local"``, the default and the
  embedded choice): a spawn-context process pool on this machine, no service
  to run. A pool whose worker dies (SUMO or libsumo crash, OOM kill) is
  rebuilt and the unfinished tasks are resubmitted up to ``retries`` times.
* :class:`DaskExecutor` (``kind = "dask"``): a Dask ``distributed`` cluster
  at ``address`` (``tcp://scheduler:8786``). Tasks are submitted with
  ``retries`` (re-run after an exception); a task whose *worker* is lost is
  rescheduled by the scheduler on another worker (up to the scheduler's
  ``distributed.scheduler.allowed-failures``, then ``KilledWorker``). Results
  come back as data through the scheduler.

Scenario files travel in one of two ways (:class:`ScenarioFiles`): a path on
storage every worker mounts (``shared``: NFS, a bind mount on one host), or
the scenario folder's bytes carried in the task (``carried``: a gzip'd tar,
unpacked once per worker into a cache keyed by its SHA-256), for workers
without shared storage. Region sub-models are small (tens to hundreds of kB),
so carrying them costs less than a round trip to a file server.

Why Dask and not Ray: see ``docs/scaling.md`` (one pure-Python wheel set,
a scheduler and workers started with one command each, ``LocalCluster`` for
tests, retries and worker-loss rescheduling built in; Ray's wheel is a
large native runtime with its own object store and dashboard processes,
heavier than the job needs: tasks of seconds to minutes, results of a few kB).
"""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import BrokenExecutor, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from traffic.errors import SimulationError, TrafficError

if TYPE_CHECKING:
    from simulation.controls import SafetyCheck

log = logging.getLogger(__name__)

#: the ``[executor] kind`` values
EXECUTOR_KINDS = ("local", "dask")
ENV_CACHE = "TRAFFIC_EXECUTOR_CACHE"

ResultCallback = Callable[["SimResult"], None]


# ---------------------------------------------------------------------------
# tasks and results: data only


@dataclass(frozen=True)
class ScenarioFiles:
    """Where a worker finds a scenario: a shared path, or the folder carried as bytes.

    ``sumocfg`` is an absolute path (``bundle`` empty: shared storage) or the
    config's name inside the bundle. Build with :meth:`shared` or :meth:`carried`.
    """

    sumocfg: str
    bundle: bytes = b""
    digest: str = ""

    @classmethod
    def shared(cls, sumocfg: str | os.PathLike[str]) -> ScenarioFiles:
        """A ``.sumocfg`` on storage every worker mounts at the same path."""
        path = Path(sumocfg).resolve()
        if not path.is_file():
            raise SimulationError(f"scenario config {path} does not exist")
        return cls(sumocfg=str(path))

    @classmethod
    def carried(cls, folder: str | os.PathLike[str], sumocfg: str | None = None) -> ScenarioFiles:
        """The files of ``folder`` (not its sub-folders) packed into the task; ``sumocfg`` names the config."""
        folder = Path(folder)
        if not folder.is_dir():
            raise SimulationError(f"scenario folder {folder} does not exist")
        if sumocfg is None:
            configs = sorted(p.name for p in folder.glob("*.sumocfg"))
            if len(configs) != 1:
                raise SimulationError(f"{folder}: expected one .sumocfg to carry, found {configs}")
            sumocfg = configs[0]
        if not (folder / sumocfg).is_file():
            raise SimulationError(f"{folder / sumocfg} does not exist")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
            for path in sorted(folder.iterdir()):
                if path.is_file():
                    info = tar.gettarinfo(str(path), arcname=path.name)
                    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                    with path.open("rb") as fh:
                        tar.addfile(info, fh)
        data = buffer.getvalue()
        return cls(sumocfg=sumocfg, bundle=data, digest=hashlib.sha256(data).hexdigest())

    def materialize(self, cache_dir: Path | None = None) -> Path:
        """The absolute path of the ``.sumocfg`` on this worker (unpacking a carried bundle once)."""
        if not self.bundle:
            path = Path(self.sumocfg)
            if not path.is_file():
                raise SimulationError(f"scenario config {path} is not on this worker's storage "
                                      f"({socket.gethostname()}): mount the shared folder or carry the files")
            return path
        if hashlib.sha256(self.bundle).hexdigest() != self.digest:
            raise SimulationError("carried scenario bundle is corrupt (SHA-256 mismatch)")
        root = Path(cache_dir or os.environ.get(ENV_CACHE) or Path(tempfile.gettempdir()) / "traffic-executor")
        target = root / self.digest[:32]
        done = target / ".complete"
        if not done.exists():
            staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=_mkdir(root)))
            try:
                with tarfile.open(fileobj=io.BytesIO(self.bundle), mode="r:gz") as tar:
                    tar.extractall(staging, filter="data")
                (staging / ".complete").write_text("ok")
                try:
                    staging.rename(target)  # atomic: another process may have won the race
                except OSError:
                    shutil.rmtree(staging, ignore_errors=True)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return (target / self.sumocfg).resolve()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class SimTask:
    """One SUMO run, as data.

    ``plans`` (SUMO tls id -> :meth:`TimingPlan.to_dict`) replace the
    network's programs (``control`` must then be ``static``: the ``sumo``
    binary with the plans as an additional file); otherwise ``control`` names
    a control of :data:`simulation.controls.CONTROLS`. ``route_files`` replace
    the scenario's demand (names inside a carried bundle, or absolute shared
    paths). ``measure_edges``: per-edge sums of SUMO's edge data (``entered``,
    ``left``, ``timeLoss``, ``waitingTime``) over the window come back in
    :attr:`SimResult.edges` (the partition's boundary flows and region delays).
    """

    key: str
    scenario: ScenarioFiles
    seed: int
    begin: int | None = None
    end: int | None = None
    control: str = "static"
    plans: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    route_files: tuple[str, ...] = ()
    extra_options: tuple[str, ...] = ()
    additional_files: tuple[str, ...] = ()
    measure_edges: tuple[str, ...] = ()
    pedestrians: str = "auto"
    backend: str = "auto"
    #: modules the worker imports first: where a control registered at run time lives (``app.sim_adaptive``
    #: registers ``adaptive``); by name, so the simulation layer never imports the composition root
    setup_modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.plans and self.control != "static":
            raise SimulationError(f"task {self.key}: plans run with the sumo binary (control 'static'), "
                                  f"not {self.control!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= 2**31 - 1:
            raise SimulationError(f"task {self.key}: seed {self.seed!r} is out of range")


@dataclass(frozen=True)
class SimResult:
    """What came back: the run's KPIs (``simulation.kpi.Kpis`` fields) and optional per-edge sums."""

    key: str
    kpis: dict[str, Any]
    edges: dict[str, dict[str, float]] = field(default_factory=dict)
    worker: str = ""
    wall_s: float = 0.0
    attempts: int = 1

    def to_kpis(self) -> Any:
        from simulation.kpi import Kpis

        return Kpis(**self.kpis)


# ---------------------------------------------------------------------------
# the worker side: one function, importable everywhere the package is installed

_SCENARIOS: dict[tuple[str, str, str], Any] = {}
_SCENARIO_LOCK = threading.Lock()


def _scenario(cfg: Path, pedestrians: str, digest: str) -> Any:
    """Load (and keep, per worker process) the scenario at ``cfg``: mapping a network costs seconds."""
    from simulation.scenario import load_scenario

    key = (str(cfg), pedestrians, digest or str(cfg.stat().st_mtime_ns))
    with _SCENARIO_LOCK:
        if key not in _SCENARIOS:
            detectors = Path(tempfile.mkdtemp(prefix="traffic-det-"))
            _SCENARIOS[key] = load_scenario(cfg, detectors_dir=detectors, pedestrians=pedestrians)
        return _SCENARIOS[key]


def _edge_data_additional(path: Path, out: Path, begin: int, end: int, edges: Sequence[str]) -> Path:
    root = ET.Element("additional")
    ET.SubElement(root, "edgeData", id="traffic_executor_edges", file=str(out), begin=str(begin), end=str(end),
                  excludeEmpty="true", edges=" ".join(edges), withInternal="false")
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)
    return path


def read_edge_data(path: Path, edges: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Per-edge sums over all intervals of a SUMO edgeData file (``entered``, ``departed``, ``timeLoss``, ...).

    ``entered`` counts vehicles coming from an upstream road; a vehicle
    inserted on the road counts in ``departed`` (a cut region's boundary
    arrivals are inserted on its entry roads).
    """
    wanted = set(edges) if edges else None
    out: dict[str, dict[str, float]] = {}
    for _ev, el in ET.iterparse(path, events=("end",)):
        if el.tag != "edge":
            continue
        eid = el.get("id", "")
        if wanted is None or eid in wanted:
            acc = out.setdefault(eid, {"entered": 0.0, "departed": 0.0, "left": 0.0, "arrived": 0.0,
                                       "timeLoss": 0.0, "waitingTime": 0.0, "sampledSeconds": 0.0})
            for name in acc:
                try:
                    acc[name] += float(el.get(name, "0"))
                except ValueError:
                    pass
        el.clear()
    return out


def execute(task: SimTask, cache_dir: str | None = None, check: SafetyCheck | None = None) -> SimResult:
    """Run ``task`` on this machine and return its result as data (the function every executor ships).

    ``check``: the safety check the caller's composition root installed,
    handed over by reference (a worker starts with an empty port; the
    controls that drive signals refuse to run without one). Failures come
    back as :class:`TrafficError` subclasses that pickle
    (a library's exception is mapped, its type and message kept). A control
    that drives SUMO from this process (libsumo: ``max-pressure``,
    ``adaptive``) runs in a fresh interpreter of its own
    (:func:`_execute_in_child`): executors keep their workers, and a second
    libsumo run in a process that has already run one is not reproducible
    (cologne1 seed 3 under ``adaptive`` alternated between two results run
    after run in one process; ``docs/performance.md``).
    """
    from simulation.controls import _portable, install_safety_check

    if check is not None:
        install_safety_check(check)
    started = time.perf_counter()
    try:
        if not _IN_CHILD and _in_loop(task):
            return _execute_in_child(task, cache_dir)
        return _execute(task, cache_dir, started)
    except Exception as exc:  # noqa: BLE001 - mapped into the project tree, original kept as the cause
        portable = _portable(exc)
        if portable is exc:
            raise
        raise portable from exc


#: this interpreter is a task's own child (:func:`_execute_in_child`): run in-loop controls here
_IN_CHILD = False


def _installed_check() -> SafetyCheck | None:
    """The safety check installed in this process, to hand to a worker or a task's own process."""
    from simulation.controls import installed_safety_check

    return installed_safety_check()


def _in_loop(task: SimTask) -> bool:
    """Whether ``task``'s control drives SUMO from this process (anything but the ``sumo`` binary's controls)."""
    import importlib

    from simulation.controls import BATCH_CONTROLS

    for module in task.setup_modules:  # a control registered at run time says there whether it is batch
        importlib.import_module(module)
    return task.control not in BATCH_CONTROLS


def _execute_in_child(task: SimTask, cache_dir: str | None) -> SimResult:
    """Run ``task`` in a new interpreter and return its result (its failure raised here, as a TrafficError).

    A plain subprocess, not multiprocessing: a Dask worker is a daemonic
    process and may not start multiprocessing children. The task and the
    result travel as pickles in files (SUMO writes to stdout); the child
    sees this interpreter's ``sys.path``, so a control registered from a
    module found there (``setup_modules``) is found again, and gets the
    safety check installed here.
    """
    with tempfile.TemporaryDirectory(prefix="traffic-task-child-") as tmp:
        request, answer = Path(tmp) / "task.pickle", Path(tmp) / "result.pickle"
        request.write_bytes(pickle.dumps((task, cache_dir, _installed_check())))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        code = "import sys; from simulation.executor import _child_main; _child_main(sys.argv[1], sys.argv[2])"
        proc = subprocess.run([sys.executable, "-c", code, str(request), str(answer)], env=env, check=False)
        if not answer.exists():
            raise SimulationError(f"its process died (exit {proc.returncode}; SUMO/libsumo crashed or it was "
                                  f"killed)")  # the executor names the task
        ok, value = pickle.loads(answer.read_bytes())
    if not ok:
        raise value
    result: SimResult = value
    return result


def _child_main(request: str, answer: str) -> None:
    """The child's side of :func:`_execute_in_child`: run the task here, write (ok, result or error)."""
    global _IN_CHILD
    _IN_CHILD = True
    task, cache_dir, check = pickle.loads(Path(request).read_bytes())
    try:
        outcome: tuple[bool, Any] = (True, execute(task, cache_dir, check))
    except TrafficError as exc:  # execute maps every failure into the tree, which pickles
        outcome = (False, exc)
    Path(answer).write_bytes(pickle.dumps(outcome))


def _execute(task: SimTask, cache_dir: str | None, started: float) -> SimResult:
    import importlib

    from simulation.controls import control
    from simulation.runner import run
    from traffic.plan import TimingPlan

    for module in task.setup_modules:
        importlib.import_module(module)

    cfg = task.scenario.materialize(Path(cache_dir) if cache_dir else None)
    scenario = _scenario(cfg, task.pedestrians, task.scenario.digest)
    begin = scenario.begin if task.begin is None else int(task.begin)
    end = scenario.end if task.end is None else int(task.end)
    workdir = Path(tempfile.mkdtemp(prefix=f"traffic-task-{_safe(task.key)}-"))
    try:
        extra_add: tuple[Path, ...] = tuple((cfg.parent / a).resolve() for a in task.additional_files)
        edge_out = workdir / "edges.xml"
        if task.measure_edges:
            extra_add += (_edge_data_additional(workdir / "edges.add.xml", edge_out, begin, end, task.measure_edges),)
        routes = tuple((cfg.parent / r).resolve() for r in task.route_files) or None
        if task.control == "static":
            plans = {tls: TimingPlan.from_dict(body) for tls, body in task.plans.items()}
            kpis = run(scenario, seed=task.seed, plans=plans or None, begin=begin, end=end, route_files=routes,
                       workdir=workdir, extra_options=task.extra_options, extra_additional=extra_add)
        else:
            if routes or task.measure_edges or task.extra_options or task.additional_files:
                raise SimulationError(f"task {task.key}: route_files, measure_edges, additional_files and "
                                      f"extra_options apply "
                                      f"to the sumo binary (control 'static') only")
            if task.backend != "auto":
                from simulation.backend import ENV_BACKEND
                os.environ[ENV_BACKEND] = task.backend
            kpis = control(task.control)(scenario, task.seed, begin, end, workdir)
        edges = read_edge_data(edge_out, task.measure_edges) if task.measure_edges and edge_out.exists() else {}
        return SimResult(key=task.key, kpis=kpis.to_dict(), edges=edges,
                         worker=f"{socket.gethostname()}:{os.getpid()}",
                         wall_s=round(time.perf_counter() - started, 3))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _safe(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in key)[:40]


# ---------------------------------------------------------------------------
# executors


@runtime_checkable
class SimulationExecutor(Protocol):
    """Runs batches of :class:`SimTask`; results in task order, as data."""

    name: str

    @property
    def workers(self) -> int:
        """How many simulations run at the same time."""

    def run(self, tasks: Sequence[SimTask], *, on_result: ResultCallback | None = None) -> list[SimResult]:
        """Run ``tasks``; ``on_result`` sees each result as it arrives; the first failure is raised after all end."""

    def close(self) -> None:
        """Release workers (and a cluster the executor started itself)."""


def _check_keys(tasks: Sequence[SimTask]) -> None:
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise SimulationError(f"task keys repeat: {dup[:5]}")


def _failure(task: SimTask, exc: BaseException) -> TrafficError:
    """A TrafficError naming the task, of the worker's class when it is built from a message alone."""
    text = f"task {task.key}: {exc}"
    if isinstance(exc, TrafficError):
        simple = all("__init__" not in vars(k) for k in type(exc).__mro__
                     if k is not TrafficError and issubclass(k, TrafficError))
        return type(exc)(text) if simple else SimulationError(text)
    return SimulationError(f"task {task.key}: {type(exc).__name__}: {exc}")


class LocalProcessExecutor:
    """Simulations in spawned processes on this machine (the default; no extra service).

    The pool lives as long as the executor (workers keep their loaded
    scenarios between epochs). A worker that dies breaks the pool: it is
    rebuilt and the unfinished tasks are resubmitted, up to ``retries``
    times; a task that raised is not retried (SUMO is deterministic per seed:
    it would fail again).
    """

    name = "local"

    def __init__(self, processes: int = 2, *, retries: int = 2, cache_dir: str | None = None) -> None:
        if processes < 1:
            raise SimulationError("processes must be at least 1")
        if retries < 0:
            raise SimulationError("retries must be non-negative")
        self._processes = processes
        self._retries = retries
        self._cache_dir = cache_dir
        self._pool: ProcessPoolExecutor | None = None

    @property
    def workers(self) -> int:
        return self._processes

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            ctx = multiprocessing.get_context("spawn")  # libsumo state must never be forked or shared
            self._pool = ProcessPoolExecutor(max_workers=self._processes, mp_context=ctx)
        return self._pool

    def _drop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def run(self, tasks: Sequence[SimTask], *, on_result: ResultCallback | None = None) -> list[SimResult]:
        _check_keys(tasks)
        results: dict[int, SimResult] = {}
        errors: dict[int, BaseException] = {}
        attempts = {i: 0 for i in range(len(tasks))}
        pending = list(range(len(tasks)))
        while pending:
            pool = self._get_pool()
            futures: dict[Future, int] = {}
            check = _installed_check()
            for i in pending:
                attempts[i] += 1
                futures[pool.submit(execute, tasks[i], self._cache_dir, check)] = i
            broken: list[int] = []
            not_done = set(futures)
            while not_done:
                done, not_done = wait(not_done, return_when="FIRST_COMPLETED")
                for fut in done:
                    i = futures[fut]
                    exc = fut.exception()
                    if exc is None:
                        res = fut.result()
                        results[i] = SimResult(**{**res.__dict__, "attempts": attempts[i]})
                        if on_result is not None:
                            on_result(results[i])
                    elif isinstance(exc, BrokenExecutor):
                        broken.append(i)
                    else:
                        errors[i] = exc
            pending = []
            if broken:
                self._drop_pool()
                for i in sorted(broken):
                    if attempts[i] > self._retries:
                        errors[i] = SimulationError(
                            f"task {tasks[i].key}: its worker process died {attempts[i]} time(s) (SUMO/libsumo "
                            f"crash or killed); retries exhausted ({self._retries})")
                    else:
                        log.warning("task %s: worker process lost, retrying (attempt %d of %d)", tasks[i].key,
                                    attempts[i] + 1, self._retries + 1)
                        pending.append(i)
        if errors:
            first = min(errors)
            raise _failure(tasks[first], errors[first]) from errors[first]
        return [results[i] for i in range(len(tasks))]

    def close(self) -> None:
        self._drop_pool()

    def __enter__(self) -> LocalProcessExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DaskExecutor:
    """Simulations on a Dask ``distributed`` cluster.

    ``address`` is the scheduler (``tcp://host:8786``); use
    :meth:`local_cluster` to start a private ``LocalCluster`` (tests,
    benchmarks). One SUMO run per worker thread: start workers with
    ``--nthreads 1`` (``dask worker tcp://scheduler:8786 --nworkers N --nthreads 1``)
    so a worker never runs two simulations on one core.
    """

    name = "dask"

    def __init__(self, address: str, *, retries: int = 2, timeout_s: float = 30.0, cache_dir: str | None = None,
                 _cluster: Any = None) -> None:
        try:
            from distributed import Client
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise SimulationError("executor kind 'dask' needs the 'distributed' package: "
                                  "pip install 'distributed>=2024'") from exc
        if retries < 0:
            raise SimulationError("retries must be non-negative")
        self._retries = retries
        self._cache_dir = cache_dir
        self._cluster = _cluster
        self.address = address
        try:
            self._client = Client(address, timeout=f"{timeout_s}s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise SimulationError(f"cannot reach the Dask scheduler at {address}: {exc}") from exc

    @classmethod
    def local_cluster(cls, workers: int = 2, *, retries: int = 2, cache_dir: str | None = None,
                      memory_limit: str = "4GiB") -> DaskExecutor:
        """Start a private ``LocalCluster`` of ``workers`` one-thread worker processes (nannies) and use it."""
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               memory_limit=memory_limit, silence_logs=logging.ERROR)
        return cls(cluster.scheduler_address, retries=retries, cache_dir=cache_dir, _cluster=cluster)

    @property
    def client(self) -> Any:
        return self._client

    @property
    def workers(self) -> int:
        info = self._client.scheduler_info(n_workers=-1)
        return max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))

    def run(self, tasks: Sequence[SimTask], *, on_result: ResultCallback | None = None) -> list[SimResult]:
        from distributed import as_completed

        _check_keys(tasks)
        if not tasks:
            return []
        batch = os.urandom(4).hex()
        check = _installed_check()
        futures = [self._client.submit(execute, task, self._cache_dir, check, key=f"sim-{_safe(task.key)}-{batch}-{i}",
                                       retries=self._retries, pure=False)
                   for i, task in enumerate(tasks)]
        index = {f.key: i for i, f in enumerate(futures)}
        results: dict[int, SimResult] = {}
        errors: dict[int, BaseException] = {}
        for fut in as_completed(futures, loop=self._client.loop):
            i = index[fut.key]
            try:
                results[i] = fut.result()
            except Exception as exc:  # noqa: BLE001 - KilledWorker, the task's own error, lost connection
                errors[i] = exc
                continue
            if on_result is not None:
                on_result(results[i])
        if errors:
            first = min(errors)
            exc = errors[first]
            if type(exc).__name__ == "KilledWorker":
                raise SimulationError(f"task {tasks[first].key}: killed the workers it ran on too many times "
                                      f"(Dask KilledWorker: {exc})") from exc
            raise _failure(tasks[first], exc) from exc
        return [results[i] for i in range(len(tasks))]

    def close(self) -> None:
        try:
            self._client.close()
        finally:
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def executor_from_settings(settings: Any) -> SimulationExecutor:
    """The executor ``[executor]`` configures (:class:`traffic.config.ExecutorSettings`)."""
    kind = getattr(settings, "kind", "local")
    if kind == "local":
        return LocalProcessExecutor(settings.workers, retries=settings.retries, cache_dir=settings.cache_dir or None)
    if kind == "dask":
        return DaskExecutor(settings.address, retries=settings.retries, timeout_s=settings.connect_timeout_s,
                            cache_dir=settings.cache_dir or None)
    raise SimulationError(f"unknown executor kind {kind!r} (known: {', '.join(EXECUTOR_KINDS)})")


# ---------------------------------------------------------------------------
# adapters from the project's run descriptions


def tasks_from_jobs(jobs: Sequence[Any], *, prefix: str = "job") -> list[SimTask]:
    """:class:`simulation.runner.RunJob` list -> tasks reading the scenarios from shared storage.

    The gate and replay describe their runs as ``RunJob``; on an executor
    they become tasks with the scenario's config path (every worker must
    mount it at the same path, route and additional files too).
    """
    tasks: list[SimTask] = []
    for n, job in enumerate(jobs):
        routes = tuple(str(Path(p).resolve()) for p in job.route_files) if job.route_files else ()
        tasks.append(SimTask(key=f"{prefix}{n}-seed{job.seed}", scenario=ScenarioFiles.shared(job.scenario.sumocfg),
                             seed=job.seed, begin=job.begin, end=job.end,
                             plans={tls: p.to_dict() for tls, p in (job.plans or {}).items()},
                             route_files=routes, extra_options=tuple(job.extra_options),
                             additional_files=tuple(str(Path(p).resolve()) for p in job.extra_additional)))
    return tasks


def run_jobs(executor: SimulationExecutor, jobs: Sequence[Any]) -> list[Any]:
    """``simulation.runner.run_many`` on an executor: ``RunJob`` list in, ``Kpis`` list out (same order)."""
    return [r.to_kpis() for r in executor.run(tasks_from_jobs(jobs))]


def seed_tasks(control_name: str, scenario: Any, seeds: Sequence[int], *, begin: int, end: int,
               pedestrians: str = "auto", backend: str = "auto") -> list[SimTask]:
    """The tasks of ``simulation.controls.run_seeds``: one per seed, the control by name, the scenario by path.

    The worker maps the network again from the ``.sumocfg`` (with
    ``pedestrians``), so a control registered at run time must be importable
    there under the same name.
    """
    from simulation.controls import control

    files = ScenarioFiles.shared(scenario.sumocfg)
    module = control(control_name).__module__
    setup = () if module.startswith("simulation.") else (module,)
    return [SimTask(key=f"{control_name}-seed{s}", scenario=files, seed=int(s), begin=begin, end=end,
                    control=control_name, pedestrians=pedestrians, backend=backend, setup_modules=setup)
            for s in seeds]

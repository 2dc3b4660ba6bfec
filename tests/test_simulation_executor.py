"""Simulation executors: local processes and a real Dask cluster give the same results, and survive lost workers.

The Dask tests start a private ``LocalCluster`` (nanny-supervised worker
processes, one thread each) and skip with the reason when it cannot start.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from simulation.citygen import grid_city
from simulation.executor import (
    DaskExecutor,
    LocalProcessExecutor,
    ScenarioFiles,
    SimResult,
    SimTask,
    SimulationExecutor,
    execute,
    executor_from_settings,
)
from traffic.config import ExecutorSettings, load_settings
from traffic.errors import ConfigError, PlanError, SimulationError

pytestmark = pytest.mark.slow

EDGES = ("A0B0", "B1B2")


def _same(a: SimResult, b: SimResult) -> bool:
    """Equal KPIs and edge sums (``wall_s`` is the machine's, not the simulation's)."""
    ka = {k: v for k, v in a.kpis.items() if k != "wall_s"}
    kb = {k: v for k, v in b.kpis.items() if k != "wall_s"}
    return a.key == b.key and ka == kb and a.edges == b.edges


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    return grid_city(tmp_path_factory.mktemp("city3"), n=3, end=300, period_s=1.0)


@pytest.fixture(scope="module")
def busy_city(tmp_path_factory):
    """Runs of a few seconds: long enough to kill a worker in the middle of one."""
    return grid_city(tmp_path_factory.mktemp("city6"), n=6, end=900, period_s=0.25)


def _tasks(city, carried: bool = True, seeds=(1, 2, 3)) -> list[SimTask]:
    files = ScenarioFiles.carried(city.folder) if carried else ScenarioFiles.shared(city.sumocfg)
    return [SimTask(key=f"seed{s}", scenario=files, seed=s, measure_edges=EDGES) for s in seeds]


@pytest.fixture(scope="module")
def dask_cluster():
    pytest.importorskip("distributed", reason="the Dask executor needs the 'distributed' package")
    try:
        executor = DaskExecutor.local_cluster(2, retries=2, memory_limit="2GiB")
    except Exception as exc:  # noqa: BLE001 - any reason the cluster cannot start here is a skip, named
        pytest.skip(f"cannot start a local Dask cluster: {type(exc).__name__}: {exc}")
    yield executor
    executor.close()


def test_local_executor_returns_data_in_task_order(city) -> None:
    tasks = _tasks(city)
    seen: list[str] = []
    with LocalProcessExecutor(2) as ex:
        assert isinstance(ex, SimulationExecutor)
        results = ex.run(tasks, on_result=lambda r: seen.append(r.key))
    assert [r.key for r in results] == ["seed1", "seed2", "seed3"]
    assert sorted(seen) == ["seed1", "seed2", "seed3"]
    for r in results:
        assert r.kpis["vehicles"] > 0 and r.to_kpis().vehicles == r.kpis["vehicles"]
        assert set(r.edges) == set(EDGES) and r.edges["A0B0"]["entered"] > 0
    # the same task in this process gives the same numbers (seeded SUMO is deterministic)
    assert _same(execute(tasks[0]), results[0])


def test_shared_path_and_carried_bundle_agree(city) -> None:
    with LocalProcessExecutor(2) as ex:
        shared = ex.run(_tasks(city, carried=False, seeds=(1,)))
        carried = ex.run(_tasks(city, carried=True, seeds=(1,)))
    assert _same(shared[0], carried[0])


def test_dask_results_equal_local(city, dask_cluster) -> None:
    tasks = _tasks(city)
    with LocalProcessExecutor(2) as ex:
        local = ex.run(tasks)
    remote = dask_cluster.run(tasks)
    assert dask_cluster.workers == 2
    assert all(_same(a, b) for a, b in zip(local, remote, strict=False))
    assert len({r.worker for r in remote}) >= 1


def test_dask_task_error_comes_back_named(city, dask_cluster) -> None:
    bad = SimTask(key="bad-plan", scenario=ScenarioFiles.carried(city.folder), seed=1,
                  plans={"no-such-tls": {"phases": []}})
    with pytest.raises(PlanError, match="task bad-plan: phases"):
        dask_cluster.run([bad])


def test_dask_worker_killed_mid_task_is_retried(busy_city, dask_cluster) -> None:
    tasks = _tasks(busy_city, seeds=(1, 2))
    with LocalProcessExecutor(2) as ex:
        expected = ex.run(tasks)
    assert expected[0].wall_s > 1.0, "runs too short to kill a worker in the middle of one"
    client = dask_cluster.client
    out: dict[str, object] = {}
    runner = threading.Thread(target=lambda: out.setdefault("results", dask_cluster.run(tasks)))
    runner.start()
    killed_pid = None
    deadline = time.monotonic() + 60
    while killed_pid is None and time.monotonic() < deadline:
        busy = {w: keys for w, keys in client.processing().items() if keys}
        if busy:
            time.sleep(0.5)  # let SUMO get going
            worker = sorted(busy)[0]
            killed_pid = client.run(os.getpid, workers=[worker])[worker]
            os.kill(killed_pid, signal.SIGKILL)
        else:
            time.sleep(0.05)
    assert killed_pid is not None, "no task ever started"
    runner.join(timeout=300)
    assert not runner.is_alive()
    results = out["results"]
    assert all(_same(a, b) for a, b in zip(expected, results, strict=False))  # rescheduled, same numbers
    assert all(not r.worker.endswith(f":{killed_pid}") for r in results)
    # the nanny restarted the killed worker: the cluster is whole again
    deadline = time.monotonic() + 60
    while len(client.scheduler_info(n_workers=-1)["workers"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(client.scheduler_info(n_workers=-1)["workers"]) == 2


def test_local_worker_killed_mid_task_is_retried(busy_city) -> None:
    psutil = pytest.importorskip("psutil")
    tasks = _tasks(busy_city, seeds=(1,))
    with LocalProcessExecutor(1, retries=1) as ex:
        expected = ex.run(tasks)
        me = psutil.Process()
        out: dict[str, object] = {}
        runner = threading.Thread(target=lambda: out.setdefault("results", ex.run(tasks)))
        runner.start()
        killed = None
        deadline = time.monotonic() + 60
        while killed is None and time.monotonic() < deadline:
            # the pool's worker is busy once its own sumo child exists
            for child in me.children(recursive=False):
                if any("sumo" in " ".join(g.cmdline()) for g in child.children()):
                    killed = child.pid
                    os.kill(killed, signal.SIGKILL)
                    break
            time.sleep(0.05)
        runner.join(timeout=300)
    assert killed is not None
    results = out["results"]
    assert _same(expected[0], results[0]) and results[0].attempts == 2


def test_executor_section_selects_and_validates() -> None:
    assert isinstance(executor_from_settings(ExecutorSettings()), LocalProcessExecutor)
    s = load_settings(env={"TRAFFIC_EXECUTOR_KIND": "dask", "TRAFFIC_EXECUTOR_ADDRESS": "tcp://sched:8786",
                           "TRAFFIC_EXECUTOR_RETRIES": "3"}).executor
    assert (s.kind, s.address, s.retries) == ("dask", "tcp://sched:8786", 3)
    with pytest.raises(ConfigError, match="executor: kind 'dask' needs address"):
        load_settings(env={"TRAFFIC_EXECUTOR_KIND": "dask"})
    with pytest.raises(ConfigError, match=r"executor.retries: 11 is out of range \(allowed: \[0, 10\]\)"):
        ExecutorSettings(retries=11)
    with pytest.raises(ConfigError, match="executor.address"):
        ExecutorSettings(kind="dask", address="http://sched:8786")


def test_unreachable_scheduler_is_a_simulation_error() -> None:
    pytest.importorskip("distributed")
    with pytest.raises(SimulationError, match="cannot reach the Dask scheduler"):
        DaskExecutor("tcp://127.0.0.1:9", timeout_s=1)


def test_gate_on_an_executor_matches_the_local_runner(city, tmp_path) -> None:
    from simulation.gate import validate
    from simulation.scenario import load_scenario

    scenario = load_scenario(city.sumocfg, detectors_dir=tmp_path / "det")
    spec = scenario.corridor.intersections[0]
    candidate = {spec.tls_id: spec.default_plan(cycle_s=70)}
    here = validate(scenario, candidate=candidate, incumbent={}, seeds=(1, 2), begin=0, end=300)
    with LocalProcessExecutor(2) as ex:
        there = validate(scenario, candidate=candidate, incumbent={}, seeds=(1, 2), begin=0, end=300, executor=ex)
    strip = lambda d: {k: v for k, v in d.items() if k != "wall_s"}  # noqa: E731
    assert (here.accepted, here.reason) == (there.accepted, there.reason)
    assert strip(here.candidate) == strip(there.candidate) and strip(here.incumbent) == strip(there.incumbent)


def _pid_tasks(city, n: int = 3) -> list[SimTask]:
    files = ScenarioFiles.carried(city.folder)
    return [SimTask(key=f"pid{s}", scenario=files, seed=s, control="test-report-pid",
                    setup_modules=("pid_control",)) for s in range(1, n + 1)]


def test_a_control_driving_sumo_from_python_gets_a_fresh_process_per_task(city) -> None:
    """libsumo runs are reproducible only in a process that ran none before: one worker, three in-loop
    tasks, three processes; the sumo binary's tasks keep reusing the worker (and its loaded scenarios)."""
    with LocalProcessExecutor(1) as ex:
        in_loop = ex.run(_pid_tasks(city))
        batch = ex.run(_tasks(city, seeds=(1, 2)))
    pids = [int(r.kpis["mean_delay_s"]) for r in in_loop]
    assert len(set(pids)) == 3 and os.getpid() not in pids
    assert [r.worker.rpartition(":")[2] for r in in_loop] == [str(p) for p in pids]
    assert len({r.worker for r in batch}) == 1


def test_in_loop_tasks_run_on_dask_workers_too(city, dask_cluster) -> None:
    """A Dask worker is daemonic (no multiprocessing children): the task's own process is a plain subprocess.
    Three tasks on two workers: three processes all the same."""
    results = dask_cluster.run(_pid_tasks(city, 3))
    assert len({int(r.kpis["mean_delay_s"]) for r in results}) == 3


def test_an_in_loop_task_whose_process_dies_is_named_with_the_reason(city) -> None:
    """The task's own process killed the way a libsumo crash kills it: a clear error naming the task."""
    task = SimTask(key="crash", scenario=ScenarioFiles.carried(city.folder), seed=1, control="test-segfault",
                   setup_modules=("pid_control",))
    with LocalProcessExecutor(1) as ex, pytest.raises(SimulationError) as info:
        ex.run([task])
    assert str(info.value).startswith("task crash: its process died") and "SUMO/libsumo crashed" in str(info.value)

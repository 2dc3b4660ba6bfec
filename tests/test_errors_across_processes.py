"""Errors survive process boundaries: pickling of the whole tree, and ``run_seeds`` failures in workers.

Before, an ``UnsafePlanError`` (or any exception pickle cannot rebuild)
raised in a seed's worker reached the user as ``BrokenProcessPool: A process
in the process pool was terminated abruptly``; these tests fail if that ever
comes back.
"""

from __future__ import annotations

import inspect
import os
import pickle
from pathlib import Path

import failing_controls
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import traffic.errors as errors
from simulation import controls
from simulation.controls import run_seeds
from simulation.scenario import Scenario
from traffic.intersection import Corridor
from traffic.plan import Violation
from traffic.security.signing import PlanSignatureError

#: every class of the tree, including subclasses defined elsewhere in the project
ERROR_CLASSES = sorted({c for _, c in inspect.getmembers(errors, inspect.isclass)
                        if issubclass(c, errors.TrafficError)} | {PlanSignatureError}, key=lambda c: c.__name__)
#: classes whose constructor takes the message alone
SIMPLE = [c for c in ERROR_CLASSES if c not in (errors.MessageError, errors.UnsafePlanError)]

text = st.text(max_size=80)
violations = st.lists(st.builds(Violation, rule=st.sampled_from(["YELLOW", "RED_CLEAR", "CONFLICT", "MIN_GREEN"]),
                                detail=text, phase=st.none() | st.integers(1, 16)), max_size=5)


def _round_trip(exc: BaseException) -> BaseException:
    return pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))


def test_the_tree_is_the_one_expected() -> None:
    names = {c.__name__ for c in ERROR_CLASSES}
    assert {"TrafficError", "ConfigError", "MessageError", "PlanError", "UnsafePlanError", "TransportError",
            "StorageError", "SimulationError", "ScenarioError", "DispatchError", "ServiceError"} <= names


@pytest.mark.parametrize("cls", SIMPLE, ids=lambda c: c.__name__)
@settings(max_examples=25, deadline=None)
@given(message=text, extra=st.none() | st.integers() | text)
def test_simple_errors_round_trip(cls: type, message: str, extra: object) -> None:
    exc = cls(message)
    exc.extra = extra  # attributes set after construction survive too
    back = _round_trip(exc)
    assert type(back) is cls and str(back) == str(exc) and back.args == exc.args and back.extra == extra


@settings(max_examples=50, deadline=None)
@given(reason=text, field=st.none() | text)
def test_message_error_keeps_reason_and_field(reason: str, field: str | None) -> None:
    exc = errors.MessageError(reason, field=field)
    back = _round_trip(exc)
    assert type(back) is errors.MessageError
    assert (back.reason, back.field, str(back)) == (reason, field, str(exc))


@settings(max_examples=50, deadline=None)
@given(found=violations)
def test_unsafe_plan_error_keeps_its_violations(found: list[Violation]) -> None:
    exc = errors.UnsafePlanError(found)
    back = _round_trip(exc)
    assert type(back) is errors.UnsafePlanError
    assert back.violations == found and back.rules == exc.rules and str(back) == str(exc)


# ---------------------------------------------------------------- run_seeds

def _scenario(tmp_path: Path) -> Scenario:
    """A scenario object no test control reads (the failures happen before SUMO would start)."""
    return Scenario(sumocfg=tmp_path / "t.sumocfg", net_file=tmp_path / "t.net.xml", route_files=(),
                    additional_files=(), begin=0, end=100, corridor=Corridor(name="t", intersections=()))


@pytest.fixture
def register(monkeypatch):
    """Register a test control under a name (process-pool path: not a batch control)."""
    def _register(name: str, fn) -> str:
        monkeypatch.setitem(controls.CONTROLS, name, fn)
        return name
    return _register


@pytest.mark.parametrize("fn, words, cls", [
    (failing_controls.raise_value_error, ["ValueError", "detector loop d7 has no lane"], errors.SimulationError),
    (failing_controls.raise_unpicklable, ["_Unpicklable", "libsumo said no (code 42)"], errors.SimulationError),
    (failing_controls.raise_unsafe, ["unsafe plan: YELLOW: 3.0 s < ITE 3.6 s"], errors.SimulationError),
    (failing_controls.raise_scenario_error, ["net has no traffic lights"], errors.ScenarioError),
], ids=["value-error", "unpicklable", "unsafe-plan", "scenario-error"])
def test_worker_failure_reaches_the_caller_with_its_reason(register, tmp_path, fn, words, cls) -> None:
    name = register("test-fails", fn)
    with pytest.raises(errors.TrafficError) as info:
        run_seeds(name, _scenario(tmp_path), [3], workdir=tmp_path, processes=1)
    message = str(info.value)
    assert isinstance(info.value, cls)
    assert "seed 3 (test-fails)" in message
    for word in words:
        assert word in message
    assert "BrokenProcessPool" not in message and "terminated abruptly" not in message


def test_failure_names_the_failing_seed_and_the_others_report_progress(register, tmp_path) -> None:
    name = register("test-seed2", failing_controls.fail_only_seed_2)
    finished: list[int] = []
    with pytest.raises(errors.SimulationError, match=r"seed 2 \(test-seed2\): RuntimeError: queue estimator"):
        run_seeds(name, _scenario(tmp_path), [1, 2, 3], workdir=tmp_path, processes=2,
                  on_result=lambda seed, _k: finished.append(seed))
    assert sorted(finished) == [1, 3]  # the failure waited for the others and they were reported


def test_a_worker_that_dies_is_named_not_broken_process_pool(register, tmp_path) -> None:
    name = register("test-segv", failing_controls.segfault)
    with pytest.raises(errors.SimulationError) as info:
        run_seeds(name, _scenario(tmp_path), [5], workdir=tmp_path, processes=1)
    message = str(info.value)
    assert "seed 5 (test-segv)" in message and "died" in message and "SUMO/libsumo crashed" in message
    assert "BrokenProcessPool" not in message


def test_sim_run_prints_the_reason_not_broken_process_pool(register, tmp_path, monkeypatch, capsys) -> None:
    """The whole user path: ``traffic sim run`` with a control that fails in the worker."""
    import simulation.scenario
    from app.cli import main

    register("test-unsafe", failing_controls.raise_unsafe)
    monkeypatch.setattr(simulation.scenario, "load_scenario", lambda *a, **k: _scenario(tmp_path))
    code = main(["sim", "run", "--scenario", str(tmp_path), "--control", "test-unsafe", "--seeds", "1,2"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unsafe plan: YELLOW: 3.0 s < ITE 3.6 s" in err and "seed 1" in err
    assert "BrokenProcessPool" not in err


def test_every_seed_runs_in_a_fresh_process(register, tmp_path) -> None:
    """A worker is never reused: libsumo runs are reproducible only in a process that ran none before."""
    name = register("test-pid", failing_controls.report_pid)
    results = run_seeds(name, _scenario(tmp_path), [1, 2, 3], workdir=tmp_path, processes=1)
    pids = [int(k.mean_delay_s) for k in results]
    assert len(set(pids)) == 3, pids
    assert os.getpid() not in pids

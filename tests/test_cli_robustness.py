"""The console script never shows a traceback: fuzzed input files and known bad command lines.

Every failure must be one line on stderr with exit code 2 (bad input), 1
(findings) or 3 (a service that cannot be reached); these inputs used to
end in FileNotFoundError, JSONDecodeError, RecursionError, MemoryError or
FileExistsError tracebacks, a silent "safe" for a 401-digit plan version,
and a replay that ran for hours.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import cli
from app.cli import main
from traffic.intersection import IntersectionSpec, PhaseSpec

SPEC = IntersectionSpec(
    controller_id="j1", tls_id="J1", link_count=4,
    phases=(PhaseSpec(1, "GGrr", 13.9, clearance_width_m=20.0), PhaseSpec(2, "rrGG", 11.1)),
    conflicts=frozenset({(0, 2), (1, 2), (0, 3), (1, 3)}),
)
GOOD_PLAN: dict[str, Any] = json.loads(SPEC.plan_from_splits([50.0, 40.0]).to_json())
GOOD_SPEC: dict[str, Any] = json.loads(SPEC.to_json())

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """``app.cli.main`` in-process; argparse's own exit becomes its code (as in a shell)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def assert_clean(code: int, out: str, err: str, allowed: set[int] = frozenset({0, 1, 2})) -> None:
    assert code in allowed, (code, err)
    assert "Traceback" not in out + err
    if code not in (0, 1):
        assert err.count("\n") <= 1 and err.startswith("traffic"), err
    if code == 1:  # findings go to stdout, one per broken rule; nothing on stderr
        assert err == "" and out


def _mutate(doc: Any, path: list[Any], value: Any) -> Any:
    """``doc`` with the element at ``path`` replaced by ``value`` (a near-valid document)."""
    doc = copy.deepcopy(doc)
    if not path:
        return value
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


def _paths(doc: Any, prefix: list[Any] | None = None) -> list[list[Any]]:
    prefix = prefix or []
    found = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            found += _paths(v, prefix + [k])
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            found += _paths(v, prefix + [i])
    return found


PLAN_PATHS = _paths(GOOD_PLAN)
SPEC_PATHS = _paths(GOOD_SPEC)


def _check(plan: bytes, spec: bytes) -> tuple[int, str, str]:
    with tempfile.TemporaryDirectory() as folder:
        plan_file, spec_file = Path(folder) / "plan.json", Path(folder) / "spec.json"
        plan_file.write_bytes(plan)
        spec_file.write_bytes(spec)
        return run_cli(["plan", "check", str(plan_file), "--spec", str(spec_file)])


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_good_plan_is_safe_so_the_fuzz_starts_from_a_valid_pair() -> None:
    code, out, err = _check(json.dumps(GOOD_PLAN).encode(), json.dumps(GOOD_SPEC).encode())
    assert (code, err) == (0, "") and "is safe" in out


@FUZZ
@given(plan=st.binary(max_size=300), spec_is_random=st.booleans())
def test_random_bytes(plan: bytes, spec_is_random: bool) -> None:
    spec = plan if spec_is_random else json.dumps(GOOD_SPEC).encode()
    assert_clean(*_check(plan, spec))


@FUZZ
@given(plan=json_values, spec=json_values)
def test_random_json(plan: Any, spec: Any) -> None:
    assert_clean(*_check(json.dumps(plan).encode(), json.dumps(spec).encode()))


@FUZZ
@given(data=st.data(), which=st.sampled_from(["plan", "spec"]))
def test_near_valid_documents(data: st.DataObject, which: str) -> None:
    """One field of a valid plan or spec replaced by anything: the rules must not crash on odd types."""
    base, paths = (GOOD_PLAN, PLAN_PATHS) if which == "plan" else (GOOD_SPEC, SPEC_PATHS)
    doc = _mutate(base, data.draw(st.sampled_from(paths)), data.draw(json_values))
    plan, spec = (doc, GOOD_SPEC) if which == "plan" else (GOOD_PLAN, doc)
    assert_clean(*_check(json.dumps(plan).encode(), json.dumps(spec).encode()))


@settings(max_examples=25, deadline=None)
@given(depth=st.integers(1, 200_000), bracket=st.sampled_from(["[]", "{}"]), which=st.sampled_from(["plan", "spec"]))
def test_deeply_nested_json(depth: int, bracket: str, which: str) -> None:
    opener, closer = ('{"a":', "}") if bracket == "{}" else ("[", "]")
    nested = (opener * depth + "0" + closer * depth).encode()
    good = json.dumps(GOOD_PLAN if which == "spec" else GOOD_SPEC).encode()
    code, out, err = _check(nested, good) if which == "plan" else _check(good, nested)
    assert_clean(code, out, err)
    assert code == 2


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(content=st.binary(max_size=400), name=st.sampled_from(["s.sumocfg", "s.xml", "scenario"]))
def test_random_file_as_scenario_fails_fast_in_one_line(content: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        scenario = Path(folder) / name
        scenario.write_bytes(content)
        started = time.monotonic()
        code, out, err = run_cli(["sim", "run", "--scenario", str(scenario), "--workdir", str(Path(folder) / "w")])
    assert time.monotonic() - started < 10
    assert_clean(code, out, err, allowed={2})


# ---------------------------------------------------------------- known bad command lines

@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad-cli")
    plan = root / "plan.json"
    plan.write_text(json.dumps(GOOD_PLAN))
    spec = root / "spec.json"
    spec.write_text(json.dumps(GOOD_SPEC))
    unsafe = root / "unsafe.json"
    unsafe.write_text(json.dumps(_mutate(GOOD_PLAN, ["phases", 0, "phaseYellowChange"], 2.0)))
    (root / "empty.json").write_text("")
    (root / "broken.json").write_text('{"controller_id": ')
    (root / "nested.json").write_text("[" * 100_000 + "]" * 100_000)
    (root / "bigversion.json").write_text(json.dumps(GOOD_PLAN | {"version": 10 ** 400}))
    (root / "negversion.json").write_text(json.dumps(GOOD_PLAN | {"version": -1}))
    (root / "afile").write_text("not a folder")
    (root / "latin1.json").write_bytes(b'{"controller_id": "j\xe9"}')
    (root / "folder").mkdir()
    return {p.name: p for p in root.iterdir()} | {"root": root}


BAD = "postgresql://127.0.0.1:1/nothing"  # port 1: connection refused at once

CASES = [
    # (command line with {file} placeholders, exit code, words in the one stderr line)
    ("plan check {plan.json} --spec {spec.json}", 0, []),
    ("plan check {unsafe.json} --spec {spec.json}", 1, []),
    ("plan check {root}/missing.json --spec {spec.json}", 2, ["cannot read plan", "No such file"]),
    ("plan check {plan.json} --spec {root}/missing.json", 2, ["cannot read spec", "No such file"]),
    ("plan check {folder} --spec {spec.json}", 2, ["is a folder"]),
    ("plan check {plan.json} --spec {broken.json}", 2, ["spec", "not valid JSON"]),
    ("plan check {plan.json} --spec {empty.json}", 2, ["spec", "empty"]),
    ("plan check {empty.json} --spec {spec.json}", 2, ["plan", "empty"]),
    ("plan check {latin1.json} --spec {spec.json}", 2, ["not UTF-8"]),
    ("plan check {nested.json} --spec {spec.json}", 2, ["nested too deeply"]),
    ("plan check {plan.json} --spec {nested.json}", 2, ["nested too deeply"]),
    ("plan check {bigversion.json} --spec {spec.json}", 2, ["version", "2**63"]),
    ("plan check {negversion.json} --spec {spec.json}", 2, ["version"]),
    ("sim run --scenario {root}/nowhere --workdir {afile}", 2, ["--workdir", "is a file"]),
    ("sim run --scenario {root}/nowhere --workdir {afile}/sub", 2, ["its parent", "is a file"]),
    ("sim run --scenario {root}/nowhere --seeds 1-99999999999", 2, ["at most 1000 seeds"]),
    ("sim run --scenario {root}/nowhere --seeds 1-1001", 2, ["at most 1000 seeds"]),
    ("sim run --scenario {root}/nowhere --seeds 5-1", 2, ["backwards"]),
    ("sim run --scenario {root}/nowhere --seed -4", 2, ["out of range"]),
    ("sim run --scenario {root}/nowhere --processes 0", 2, ["--processes"]),
    ("sim run --scenario {root}/nowhere", 2, ["does not exist"]),
    ("sim run --scenario {afile}", 2, ["cannot read"]),
    ("sim run --scenario {root}/nowhere --control fuzzy", 2, ["invalid choice"]),
    ("pki init --out {afile} --controllers j1", 2, ["--out", "is a file"]),
    ("pki init --out {afile}/pki --controllers j1", 2, ["its parent", "is a file"]),
    ("pki init --out {root}/pki --controllers j1 --port 0", 2, ["--port"]),
    ("replay --from 1900-01-01 --to 2100-01-01", 2, ["at most 31 days"]),
    (f"replay --from 1900-01-01 --to 2100-01-01 --dsn {BAD}", 2, ["at most 31 days"]),
    ("replay --from 2024-01-02 --to 2024-01-01", 2, ["must be after"]),
    ("replay --from 2024-01-01 --to 2024-01-02 --bin 0", 2, ["--bin"]),
    ("replay --from yesterday --to 2024-01-02", 2, ["ISO-8601"]),
    (f"replay --from 2024-01-01 --to 2024-01-02 --dsn {BAD} --workdir " + "{root}/rw", 3, ["service unavailable"]),
    (f"plans history j1 --dsn {BAD}", 3, ["service unavailable", "PostgreSQL"]),
    (f"plans show abc --dsn {BAD}", 3, ["service unavailable"]),
    (f"lock j1 --reason test --dsn {BAD}", 3, ["service unavailable"]),
    (f"migrate --dsn {BAD}", 3, ["service unavailable"]),
    (f"ingest --mqtt-url mqtt://127.0.0.1:1 --dsn {BAD}", 3, ["service unavailable"]),
    ("ingest --mqtt-url mqtt://127.0.0.1:1", 3, ["MQTT broker", "127.0.0.1:1"]),
    ("-c {root}/missing.toml migrate", 2, ["does not exist"]),
    ("-c {folder} migrate", 2, ["is a folder"]),
    ("plans history j1 --limit -5", 2, ["--limit", "between 1 and 10000"]),
    ("demo --intersections 0", 2, ["--intersections"]),
    ("corridor --out {root}/c --minutes 99999999", 2, ["--minutes"]),
    ("", 2, ["required"]),
    ("plan", 2, ["required"]),
]


@pytest.mark.parametrize("line, expected, words", CASES, ids=[c[0][:60] for c in CASES])
def test_bad_command_lines(files, monkeypatch, line: str, expected: int, words: list[str]) -> None:
    monkeypatch.delenv("TRAFFIC_DATABASE_DSN", raising=False)
    monkeypatch.setenv("TRAFFIC_CONFIG", "")
    monkeypatch.chdir(files["root"])  # no stray ./traffic.toml
    argv = re.sub(r"\{([^}]+)\}", lambda m: str(files[m.group(1)]), line).split()
    code, out, err = run_cli(argv)
    assert code == expected, (code, err)
    assert "Traceback" not in out + err
    if expected >= 2:
        assert err.count("\n") == 1, err
    for word in words:
        assert word in err, err


def test_version(capsys) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert version("open-traffic-signal") in capsys.readouterr().out


def test_internal_errors_are_one_line_unless_debugging(monkeypatch) -> None:
    def broken(_args):
        raise RuntimeError("the optimizer lost its cycle\nsecond line")

    monkeypatch.setattr(cli, "_cmd_migrate", broken)
    monkeypatch.delenv("TRAFFIC_DEBUG", raising=False)
    code, _out, err = run_cli(["migrate"])
    assert code == 70
    assert err == ("traffic: internal error: RuntimeError: the optimizer lost its cycle; second line "
                   "(run with --debug for the traceback)\n")
    with pytest.raises(RuntimeError):
        main(["--debug", "migrate"])
    monkeypatch.setenv("TRAFFIC_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["migrate"])


@pytest.mark.parametrize("exc, code, words", [
    (KeyboardInterrupt(), 130, ["interrupted"]),
    (FileNotFoundError(2, "No such file or directory", "/x/y.json"), 2, ["/x/y.json", "No such file"]),
    (ConnectionRefusedError(111, "Connection refused"), 3, ["service unavailable"]),
    (RecursionError("maximum recursion depth exceeded"), 2, ["nested too deeply"]),
    (MemoryError(), 2, ["out of memory"]),
    (ValueError("bad number"), 2, ["bad input", "bad number"]),
])
def test_exception_classes_map_to_exit_codes(monkeypatch, exc, code, words) -> None:
    def raises(_args):
        raise exc

    monkeypatch.setattr(cli, "_cmd_migrate", raises)
    monkeypatch.delenv("TRAFFIC_DEBUG", raising=False)
    got, _out, err = run_cli(["migrate"])
    assert got == code and err.count("\n") == 1
    for word in words:
        assert word in err

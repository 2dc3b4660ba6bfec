"""Configuration in one place: a TOML file plus environment variables.

Resolution order (later wins): built-in safe defaults for a local run, the
TOML file (``$TRAFFIC_CONFIG`` or ``./traffic.toml`` when present), then
environment variables named ``TRAFFIC_<SECTION>_<KEY>`` (for example
``TRAFFIC_MQTT_URL`` or ``TRAFFIC_DATABASE_DSN``). Every section is a frozen
dataclass so a running service cannot mutate its settings by accident.

Every setting is checked when a section is built (from the file, the
environment or code): an out-of-range value is refused with the setting's
name, the value and what is allowed, instead of surfacing hours later as a
strange plan or a dropped connection. Unknown keys and sections are refused
too, with the nearest known name: a typo must not silently mean "default".
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from traffic.clearance import (
    FLOOR_RED_CLEAR_S,
    FLOOR_YELLOW_S,
    MAX_RED_CLEAR_S,
    MAX_YELLOW_S,
    POLICY_KINDS,
    ClearancePolicy,
    parse_approaches,
)
from traffic.errors import ConfigError
from traffic.plan import MODES

ENV_PREFIX = "TRAFFIC_"
DEFAULT_CONFIG_FILE = "traffic.toml"
#: values of ``OptimizerSettings.offset_method``
OFFSET_METHODS = ("bandwidth", "green-wave")
#: values of ``OptimizerSettings.plan_mode`` (== ``traffic.plan.MODES``, the plan modes the field runs)
PLAN_MODES = MODES
MQTT_SCHEMES = ("mqtt", "mqtts")
#: values of ``ExecutorSettings.kind`` (== ``simulation.executor.EXECUTOR_KINDS``)
EXECUTOR_KINDS = ("local", "dask")
DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "inproc", "ucx")
#: an MQTT topic level the project builds (``traffic.topics``): site and share group
_TOPIC_LEVEL = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DAY_S = 86_400


# ---------------------------------------------------------------------------
# checks: each returns None when the value is fine, else what is wrong and allowed

Check = Callable[[Any], "str | None"]


def _fmt(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def in_range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
             unit: str = "") -> Check:
    """A number between ``lo`` and ``hi`` (inclusive; ``lo_open``: strictly above ``lo``), finite."""
    left = "(" if lo_open else "["
    text = f"{left}{_fmt(lo) if lo is not None else '-inf'}, {_fmt(hi) if hi is not None else 'inf'}]"
    text += f" {unit}" if unit else ""

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{value!r} is not a number (allowed: {text})"
        if isinstance(value, float) and not math.isfinite(value):
            return f"{value!r} is not a finite number (allowed: {text})"
        if lo is not None and (value <= lo if lo_open else value < lo):
            return f"{_fmt(value)} is out of range (allowed: {text})"
        if hi is not None and value > hi:
            return f"{_fmt(value)} is out of range (allowed: {text})"
        return None
    return check


def positive_duration(hi: float, unit: str = "s") -> Check:
    """A duration: greater than 0, at most ``hi``."""
    return in_range(0, hi, lo_open=True, unit=unit)


def one_of(allowed: Iterable[Any]) -> Check:
    """One of a fixed set (an enum): the message lists them all."""
    options = tuple(allowed)

    def check(value: Any) -> str | None:
        if value in options and not isinstance(value, bool):
            return None
        return f"{value!r} is not one of {', '.join(map(str, options))}"
    return check


def any_text(value: Any) -> str | None:
    """Free text (user names, passwords, paths): a string without NUL, which no C library accepts."""
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    return "contains a NUL character" if "\0" in value else None


def topic_level(value: Any) -> str | None:
    """An MQTT topic level the project builds: 1-64 of [a-z0-9_-], starting with a letter or digit."""
    if isinstance(value, str) and _TOPIC_LEVEL.match(value):
        return None
    return f"{value!r} is not a topic level (allowed: 1-64 of a-z, 0-9, _ and -, no / + # or spaces)"


def _service_url(value: Any, schemes: tuple[str, ...], expected: str) -> str | None:
    """Empty (the embedded default) or ``scheme://host[:port]`` with a known scheme and a port 1-65535."""
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    if value == "":
        return None
    parsed = urlparse(value)
    if parsed.scheme not in schemes or not parsed.hostname:
        return f"{value!r} is not {expected}"
    try:
        port = parsed.port
    except ValueError:
        return f"{value!r} has a port outside 1-65535"
    if port is not None and not 1 <= port <= 65535:
        return f"{value!r} has a port outside 1-65535"
    return None


def mqtt_url(value: Any) -> str | None:
    """Empty (a private broker) or ``mqtt[s]://host[:port]`` with a port 1-65535."""
    return _service_url(value, MQTT_SCHEMES, "mqtt://host[:port] or mqtts://host[:port]")


def postgres_dsn(value: Any) -> str | None:
    """Empty (a private cluster), a ``postgresql://`` URL, or a libpq ``key=value`` string."""
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    if value == "":
        return None
    if "://" in value:
        parsed = urlparse(value)
        if parsed.scheme not in ("postgresql", "postgres"):
            return f"scheme {parsed.scheme!r} is not postgresql:// (or a libpq key=value string)"
        try:
            port = parsed.port
        except ValueError:
            return "has a port outside 1-65535"
        if port is not None and not 1 <= port <= 65535:
            return "has a port outside 1-65535"
        return None
    if "=" not in value:
        return "is neither a postgresql:// URL nor a libpq key=value string"
    return None


def scheduler_address(value: Any) -> str | None:
    """Empty (local processes) or a Dask scheduler address ``tcp://host:port`` (or tls://, ws://, wss://)."""
    return _service_url(value, DASK_SCHEMES,
                        f"a scheduler address like tcp://host:8786 (schemes: {', '.join(DASK_SCHEMES)})")


def time_zone(value: Any) -> str | None:
    """An IANA time zone name the system knows (``Asia/Ho_Chi_Minh``)."""
    from zoneinfo import ZoneInfo

    if not isinstance(value, str) or not value:
        return f"{value!r} is not an IANA time zone name"
    try:
        ZoneInfo(value)
    except (ValueError, OSError, LookupError):  # ZoneInfoNotFoundError is a KeyError
        return f"{value!r} is not an IANA time zone name (e.g. Asia/Ho_Chi_Minh)"
    return None


def seed_list(value: Any) -> str | None:
    """1-100 distinct SUMO seeds (0 to 2**31 - 1)."""
    if not isinstance(value, tuple) or not value:
        return "needs at least one seed"
    if len(value) > 100:
        return f"{len(value)} seeds; at most 100 (each is a SUMO run per candidate plan)"
    bad = [s for s in value if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= 2**31 - 1]
    if bad:
        return f"seed {bad[0]!r} is out of range (allowed: 0 to {2**31 - 1})"
    if len(set(value)) != len(value):
        return f"seeds repeat: {value}"
    return None


class _Section:
    """Mixin: a settings section validates every field (and cross-field rules) when it is built.

    Runs for ``Settings`` built from a file, the environment, in code, or
    with ``dataclasses.replace``, so no path can hold an unchecked value.
    """

    #: the TOML section name, for messages (``mqtt.qos: ...``)
    SECTION = ""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            problem = check_value(type(self), f.name, getattr(self, f.name))
            if problem:
                raise ConfigError(f"{self.SECTION}.{f.name}: {problem}")
        for rule in _CROSS_CHECKS.get(type(self), ()):
            problem = rule(self)
            if problem:
                raise ConfigError(f"{self.SECTION}: {problem}")


def check_value(section: type, key: str, value: Any) -> str | None:
    """What is wrong with ``value`` for setting ``key`` of ``section`` (None: fine)."""
    check = _CHECKS.get(section, {}).get(key)
    if check is None:  # every setting has a check: a new field without one is a bug, caught by the tests
        return None
    return check(value)


@dataclass(frozen=True)
class MqttSettings(_Section):
    """Broker connection. ``url`` is ``mqtt://host:port`` or ``mqtts://host:port``."""

    SECTION = "mqtt"

    url: str = ""  # empty: the demo starts a private broker
    username: str = ""
    password: str = ""
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    keepalive_s: int = 30
    qos: int = 1

    @property
    def host(self) -> str:
        return urlparse(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parsed = urlparse(self.url)
        if parsed.port:
            return parsed.port
        return 8883 if parsed.scheme == "mqtts" else 1883

    @property
    def tls(self) -> bool:
        return urlparse(self.url).scheme == "mqtts"


@dataclass(frozen=True)
class DatabaseSettings(_Section):
    """PostgreSQL connection (libpq DSN or URL). Empty: the demo starts a private cluster."""

    SECTION = "database"

    dsn: str = ""
    pool_min: int = 1
    pool_max: int = 4


@dataclass(frozen=True)
class SiteSettings(_Section):
    """Identity of the deployment: the MQTT ``<site>`` level and the demo's clock origin."""

    SECTION = "site"

    site: str = "hanoi"
    timezone: str = "Asia/Ho_Chi_Minh"


@dataclass(frozen=True)
class IngestSettings(_Section):
    """Batching of detector records into the store."""

    SECTION = "ingest"

    batch_max_rows: int = 5000
    batch_max_delay_s: float = 0.5
    share_group: str = "ingest"
    spool_dir: str = ""  # empty: <state_dir>/spool


@dataclass(frozen=True)
class OptimizerSettings(_Section):
    """Demand model and cycle/split bounds (same everywhere: no per-scenario tuning)."""

    SECTION = "optimizer"

    saturation_flow_pcu_per_lane_h: float = 1900.0
    pcu_motorcycle: float = 0.3
    pcu_car: float = 1.0
    pcu_bus: float = 2.5
    motorcycle_share_default: float = 0.85
    # non-classifying loops under-count motorcycles riding side by side, occupancy does not
    # (controller.demand): the vehicles seen from occupancy may exceed the pulses by at most this factor;
    # 1.0: pulses only
    occupancy_uplift_max: float = 2.0
    min_cycle_s: float = 40.0
    max_cycle_s: float = 150.0
    lost_time_per_phase_s: float = 4.0
    max_cycle_step_s: float = 20.0
    smoothing_alpha: float = 0.5
    # how the field runs central plans (controller.actuation): "free" (fully actuated),
    # "actuated" (coordinated-actuated) or "pretimed"; maximum green = factor x optimal green,
    # within [floor, cap] s; passage (vehicle extension) in s
    plan_mode: str = "free"
    max_green_factor: float = 2.0
    max_green_floor_s: float = 20.0
    max_green_cap_s: float = 60.0
    passage_s: float = 3.0
    # corridor offsets of coordinated plans (plan_mode other than "free"): "bandwidth" (two-way
    # MAXBAND MILP, controller.bandwidth; green wave where the links are not a simple chain)
    # or "green-wave" (one direction only, controller.optimizer.green_wave_offsets)
    offset_method: str = "bandwidth"


@dataclass(frozen=True)
class ControlSettings(_Section):
    """Central loop cadence and the validation gate."""

    SECTION = "control"

    epoch_s: int = 600
    #: the centre sizes plans on at least this much recent counting, however often it re-plans: a
    #: one-minute window is mostly noise (re-planning every 60 s on 60 s of counts gridlocked cologne3
    #: on one seed in three, bench/cadence.py); 0: the epoch alone
    demand_window_min_s: int = 300
    count_interval_s: int = 60
    gate_margin: float = 0.02
    gate_seeds: tuple[int, ...] = (1, 2)
    gate_horizon_s: int = 900
    plan_expiry_s: int = 120
    #: no plan the dispatcher signs is valid longer than this (a caller's longer or missing expiry is clamped)
    plan_expiry_max_s: int = 900
    ack_timeout_s: float = 10.0


@dataclass(frozen=True)
class ClearanceSettings(_Section):
    """The site's clearance policy (``traffic.clearance``): the agency's decision, made explicit.

    ``policy = "ite"`` (default): yellow and red clearance from the ITE
    formulas per approach. ``policy = "agency"``: the agency's own
    ``yellow_s`` and ``red_clear_s`` for every approach, and per controller
    or phase in ``approaches`` (``"J1=3.5/2.0; J2:3=4.0/1.5"``: tls id,
    optional phase, yellow / all-red in s). ``label`` names the standard
    (``QCVN``) in plans and tables. Nothing can go below the project's floor
    (yellow >= 3.0 s, all-red >= 1.0 s): such a value is refused here, and
    both plan checks enforce it again.
    """

    SECTION = "clearance"

    policy: str = "ite"
    label: str = ""
    yellow_s: float = 3.0
    red_clear_s: float = 1.0
    approaches: str = ""

    def to_policy(self) -> ClearancePolicy:
        """The :class:`ClearancePolicy` these settings describe."""
        if self.policy == "ite":
            return ClearancePolicy()
        return ClearancePolicy("agency", self.label, self.yellow_s, self.red_clear_s,
                               parse_approaches(self.approaches))


@dataclass(frozen=True)
class FieldSettings(_Section):
    """Field emulator behaviour."""

    SECTION = "field"

    central_silence_timeout_s: float = 900.0
    transition_max_step_s: float = 10.0
    #: the field refuses a plan without an expiry or valid for longer than this
    max_plan_expiry_s: float = 900.0
    #: all-red shown on start-up before the first green; 0 = automatic (the longest red clearance, the floor)
    startup_all_red_s: float = 0.0
    #: where a field agent keeps its replay memory and active plan across restarts ("" = in memory only)
    state_dir: str = ""
    #: reach of the approach sensors (radar or video zones on every lane feeding a signal, m before the
    #: stop line): free-mode greens then end by arrival scheduling (field_firmware_stubs.approach_schedule);
    #: 0 = the site has none, the loops' gap-out decides. Honoured by the ``adaptive`` simulation control;
    #: the closed-loop demo's world keeps loops only, so its before/after shows the centre's effect alone
    approach_range_m: float = 200.0


@dataclass(frozen=True)
class SecuritySettings(_Section):
    """Plan signing (``traffic.security``). Empty paths: development mode, plans go unsigned.

    ``plan_signing_key`` is the centre's Ed25519 private key (PEM);
    ``plan_verify_keys`` the public keys a field controller trusts, comma
    separated so a key can be rotated without a flag day.
    """

    SECTION = "security"

    pki_dir: str = ""
    plan_signing_key: str = ""
    plan_verify_keys: str = ""


@dataclass(frozen=True)
class ExecutorSettings(_Section):
    """Where simulations run (``simulation.executor``): local processes, or a Dask cluster at ``address``.

    ``workers``: local processes (kind ``local``); ``retries``: re-runs of a
    task after a failure or a lost worker; ``cache_dir``: where workers unpack
    scenario files carried in tasks (empty: the system temporary folder).
    """

    SECTION = "executor"

    kind: str = "local"
    address: str = ""
    workers: int = 2
    retries: int = 2
    connect_timeout_s: float = 30.0
    cache_dir: str = ""


@dataclass(frozen=True)
class Settings:
    """All settings. Build with :func:`load_settings`."""

    state_dir: str = ".state"
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    site: SiteSettings = field(default_factory=SiteSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    optimizer: OptimizerSettings = field(default_factory=OptimizerSettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    clearance: ClearanceSettings = field(default_factory=ClearanceSettings)
    field_: FieldSettings = field(default_factory=FieldSettings, metadata={"toml": "field"})
    security: SecuritySettings = field(default_factory=SecuritySettings)
    executor: ExecutorSettings = field(default_factory=ExecutorSettings)


#: one check per setting (the test suite asserts none is missing)
_CHECKS: dict[type, dict[str, Check]] = {
    MqttSettings: {
        "url": mqtt_url,
        "username": any_text,
        "password": any_text,
        "ca_file": any_text,
        "cert_file": any_text,
        "key_file": any_text,
        "keepalive_s": in_range(1, 65535, unit="s"),  # MQTT keep alive is a 16-bit number of seconds
        "qos": one_of((0, 1, 2)),
    },
    DatabaseSettings: {
        "dsn": postgres_dsn,
        "pool_min": in_range(0, 1000),
        "pool_max": in_range(1, 1000),
    },
    SiteSettings: {
        "site": topic_level,
        "timezone": time_zone,
    },
    IngestSettings: {
        "batch_max_rows": in_range(1, 1_000_000, unit="rows"),
        "batch_max_delay_s": positive_duration(60),
        "share_group": topic_level,
        "spool_dir": any_text,
    },
    OptimizerSettings: {
        "saturation_flow_pcu_per_lane_h": in_range(0, 5000, lo_open=True, unit="pcu/h/lane"),
        "pcu_motorcycle": in_range(0, 10, lo_open=True, unit="pcu"),
        "pcu_car": in_range(0, 10, lo_open=True, unit="pcu"),
        "pcu_bus": in_range(0, 10, lo_open=True, unit="pcu"),
        "motorcycle_share_default": in_range(0, 1),
        "occupancy_uplift_max": in_range(1, 4, unit="x pulses (1: pulses only)"),
        "min_cycle_s": positive_duration(600),
        "max_cycle_s": positive_duration(600),
        "lost_time_per_phase_s": in_range(0, 60, unit="s"),
        "max_cycle_step_s": positive_duration(600),
        "smoothing_alpha": in_range(0, 1, lo_open=True),
        "plan_mode": one_of(PLAN_MODES),
        "max_green_factor": in_range(1, 10),
        "max_green_floor_s": in_range(0, 600, unit="s"),
        "max_green_cap_s": positive_duration(600),
        "passage_s": positive_duration(60),
        "offset_method": one_of(OFFSET_METHODS),
    },
    ControlSettings: {
        "epoch_s": in_range(1, DAY_S, unit="s"),
        "demand_window_min_s": in_range(0, DAY_S, unit="s"),
        "count_interval_s": in_range(1, 3600, unit="s"),
        "gate_margin": in_range(0, 1),
        "gate_seeds": seed_list,
        "gate_horizon_s": in_range(1, DAY_S, unit="s"),
        "plan_expiry_s": in_range(1, DAY_S, unit="s"),
        "plan_expiry_max_s": in_range(1, DAY_S, unit="s"),
        "ack_timeout_s": positive_duration(3600),
    },
    ClearanceSettings: {
        "policy": one_of(POLICY_KINDS),
        "label": lambda v: (None if isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9 ._()/-]{0,40}", v) else
                            f"{v!r} is not a label (allowed: up to 40 of letters, digits, space . _ ( ) / -)"),
        "yellow_s": in_range(FLOOR_YELLOW_S, MAX_YELLOW_S, unit="s (the project's floor is 3 s)"),
        "red_clear_s": in_range(FLOOR_RED_CLEAR_S, MAX_RED_CLEAR_S, unit="s (the project's floor is 1 s)"),
        "approaches": lambda v: _approaches_problem(v),
    },
    FieldSettings: {
        "central_silence_timeout_s": positive_duration(DAY_S),
        "transition_max_step_s": positive_duration(600),
        "max_plan_expiry_s": positive_duration(DAY_S),
        "startup_all_red_s": in_range(0, 60, unit="s (0 = automatic)"),
        "state_dir": any_text,
        "approach_range_m": in_range(0, 1000, unit="m (0 = no approach sensors)"),
    },
    ExecutorSettings: {
        "kind": one_of(EXECUTOR_KINDS),
        "address": scheduler_address,
        "workers": in_range(1, 1024, unit="processes"),
        "retries": in_range(0, 10),
        "connect_timeout_s": positive_duration(600),
        "cache_dir": any_text,
    },
    SecuritySettings: {
        "pki_dir": any_text,
        "plan_signing_key": any_text,
        "plan_verify_keys": any_text,
    },
}

def _approaches_problem(value: Any) -> str | None:
    """Per-approach clearance overrides: ``<tls id>[:<phase>]=<yellow>/<all-red>`` separated by ``;``."""
    if not isinstance(value, str):
        return f"{value!r} is not a string"
    try:
        parse_approaches(value)
    except ValueError as exc:
        return f"{exc} (allowed: e.g. 'J1=3.5/2.0; J2:3=4.0/1.5', yellow [{FLOOR_YELLOW_S:g}, {MAX_YELLOW_S:g}] s, " \
               f"all-red [{FLOOR_RED_CLEAR_S:g}, {MAX_RED_CLEAR_S:g}] s)"
    return None


#: rules between settings of one section
_CROSS_CHECKS: dict[type, tuple[Callable[[Any], str | None], ...]] = {
    MqttSettings: (
        lambda m: (f"cert_file and key_file go together (cert_file={m.cert_file!r}, key_file={m.key_file!r})"
                   if bool(m.cert_file) != bool(m.key_file) else None),
    ),
    DatabaseSettings: (
        lambda d: (f"pool_max ({d.pool_max}) must be at least pool_min ({d.pool_min})"
                   if d.pool_max < d.pool_min else None),
    ),
    ControlSettings: (
        lambda c: (f"plan_expiry_s ({c.plan_expiry_s}) must be at most plan_expiry_max_s ({c.plan_expiry_max_s})"
                   if c.plan_expiry_s > c.plan_expiry_max_s else None),
    ),
    ExecutorSettings: (
        lambda e: ("kind 'dask' needs address (the scheduler, e.g. tcp://scheduler:8786)"
                   if e.kind == "dask" and not e.address else None),
    ),
    ClearanceSettings: (
        lambda c: ("approaches apply to policy 'agency' only (policy 'ite' computes every approach)"
                   if c.policy == "ite" and c.approaches.strip() else None),
    ),
    OptimizerSettings: (
        lambda o: (f"max_cycle_s ({_fmt(o.max_cycle_s)}) must be at least min_cycle_s ({_fmt(o.min_cycle_s)})"
                   if o.max_cycle_s < o.min_cycle_s else None),
        lambda o: (f"max_green_cap_s ({_fmt(o.max_green_cap_s)}) must be at least max_green_floor_s "
                   f"({_fmt(o.max_green_floor_s)})" if o.max_green_cap_s < o.max_green_floor_s else None),
    ),
}

#: top-level settings (outside any section)
_TOP_CHECKS: dict[str, Check] = {
    "state_dir": lambda v: any_text(v) or ("is empty (allowed: a folder path)" if v == "" else None),
}


def _coerce(value: Any, target_type: Any, where: str) -> Any:
    """Convert a TOML or environment value to the dataclass field's type.

    Environment values are always text and are parsed; TOML values already
    have a type and must match it (``qos = 1.5`` or ``site = 5`` is a
    mistake to report, not to round or stringify).
    """
    type_name = target_type if isinstance(target_type, str) else getattr(target_type, "__name__", str(target_type))
    try:
        if type_name.startswith("tuple"):
            items = [x.strip() for x in value.split(",") if x.strip()] if isinstance(value, str) else list(value)
            return tuple(_integer(x) for x in items)
        if type_name == "int":
            return _integer(value)
        if type_name == "float":
            if isinstance(value, bool):
                raise ValueError("a boolean is not a number")
            return float(value.strip()) if isinstance(value, str) else float(value)
        if type_name == "bool":
            if isinstance(value, str):
                return value.strip().lower() in {"1", "true", "yes", "on"}
            return bool(value)
        if not isinstance(value, str):
            raise TypeError(f"{type(value).__name__} is not text")
        return value
    except (TypeError, ValueError, OverflowError) as exc:
        name, _, source = where.partition(" (from ")
        tail = f" (from {source}" if source else ""
        raise ConfigError(f"{name}: cannot read {value!r} as {type_name}{tail}") from exc


def _integer(value: Any) -> int:
    """An int from text or a TOML integer; floats with a fraction and booleans are refused."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(value, str):
        return int(value.strip())
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("not a whole number")
        return int(value)
    if isinstance(value, int):
        return value
    raise TypeError(f"{type(value).__name__} is not an integer")


def _section_name(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("toml", f.name))


def _unknown(kind: str, where: str, key: str, known: Iterable[str]) -> ConfigError:
    """A typo is the usual cause: name the unknown key and the nearest known one."""
    known = sorted(known)
    near = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return ConfigError(f"{where}: unknown {kind} {key!r}{hint} (known: {', '.join(known)})")


def _apply(section: Any, values: Mapping[str, tuple[Any, str]], where: str) -> Any:
    """``section`` with ``values`` (key -> (value, source)) applied, each checked with its source named."""
    known = {f.name: f for f in fields(section)}
    updates: dict[str, Any] = {}
    for key, (value, source) in values.items():
        if key not in known:
            raise _unknown("setting", f"{source}: [{where}]", key, known)
        typed = _coerce(value, known[key].type, f"{where}.{key} (from {source})")
        problem = check_value(type(section), key, typed)
        if problem:
            raise ConfigError(f"{where}.{key}: {problem} (from {source})")
        updates[key] = typed
    try:
        return replace(section, **updates)
    except ConfigError as exc:  # a rule between settings: say where the values came from
        sources = sorted({source for _, source in values.values()})
        raise ConfigError(f"{exc} (from {', '.join(sources)})" if sources else str(exc)) from None


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load settings from defaults, the TOML file and the environment.

    ``path`` overrides ``$TRAFFIC_CONFIG``; a missing explicit path is an error,
    a missing default file is not (defaults are meant for a local run). Every
    value is checked (:data:`_CHECKS`); the error names the setting, the
    value, what is allowed and where the value came from.
    """
    env = os.environ if env is None else env
    settings = Settings()
    explicit = path or env.get(f"{ENV_PREFIX}CONFIG")
    config_path = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
    data: dict[str, Any] = {}
    if config_path.is_dir():
        raise ConfigError(f"configuration file {config_path} is a folder")
    if config_path.exists():
        try:
            data = tomllib.loads(config_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: {exc}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read configuration file {config_path}: {exc}") from exc
    elif explicit:
        raise ConfigError(f"configuration file {config_path} does not exist")

    names = {_section_name(f) for f in fields(settings)}
    for key in data:
        if key not in names:
            raise _unknown("section or setting", str(config_path), key, names)

    top_updates: dict[str, Any] = {}
    for f in fields(settings):
        name = _section_name(f)
        current = getattr(settings, f.name)
        if dataclasses.is_dataclass(current):
            table = data.get(name, {})
            if not isinstance(table, dict):
                raise ConfigError(f"{config_path}: [{name}] must be a table of settings, got {table!r}")
            section_values = {k: (v, str(config_path)) for k, v in table.items()}
            prefix = f"{ENV_PREFIX}{name.upper()}_"
            for key in (sf.name for sf in fields(current)):
                env_key = prefix + key.upper()
                if env_key in env:
                    section_values[key] = (env[env_key], env_key)
            top_updates[f.name] = _apply(current, section_values, name)
        else:
            env_key = f"{ENV_PREFIX}{name.upper()}"
            value, source = ((env[env_key], env_key) if env_key in env else
                             (data[name], str(config_path)) if name in data else (current, "default"))
            typed = _coerce(value, f.type, f"{name} (from {source})")
            problem = _TOP_CHECKS[f.name](typed)
            if problem:
                raise ConfigError(f"{name}: {problem} (from {source})")
            top_updates[f.name] = typed
    return replace(settings, **top_updates)

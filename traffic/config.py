"""Configuration in one place: a TOML file plus environment variables.

Resolution order (later wins): built-in safe defaults for a local run, the
TOML file (``$TRAFFIC_CONFIG`` or ``./traffic.toml`` when present), then
environment variables named ``TRAFFIC_<SECTION>_<KEY>`` (for example
``TRAFFIC_MQTT_URL`` or ``TRAFFIC_DATABASE_DSN``). Every section is a frozen
dataclass so a running service cannot mutate its settings by accident.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from traffic.errors import ConfigError

ENV_PREFIX = "TRAFFIC_"
DEFAULT_CONFIG_FILE = "traffic.toml"
#: values of ``OptimizerSettings.offset_method``
OFFSET_METHODS = ("bandwidth", "green-wave")


@dataclass(frozen=True)
class MqttSettings:
    """Broker connection. ``url`` is ``mqtt://host:port`` or ``mqtts://host:port``."""

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
class DatabaseSettings:
    """PostgreSQL connection (libpq DSN or URL). Empty: the demo starts a private cluster."""

    dsn: str = ""
    pool_min: int = 1
    pool_max: int = 4


@dataclass(frozen=True)
class SiteSettings:
    """Identity of the deployment: the MQTT ``<site>`` level and the demo's clock origin."""

    site: str = "hanoi"
    timezone: str = "Asia/Ho_Chi_Minh"


@dataclass(frozen=True)
class IngestSettings:
    """Batching of detector records into the store."""

    batch_max_rows: int = 5000
    batch_max_delay_s: float = 0.5
    share_group: str = "ingest"
    spool_dir: str = ""  # empty: <state_dir>/spool


@dataclass(frozen=True)
class OptimizerSettings:
    """Demand model and cycle/split bounds (same everywhere: no per-scenario tuning)."""

    saturation_flow_pcu_per_lane_h: float = 1900.0
    pcu_motorcycle: float = 0.3
    pcu_car: float = 1.0
    pcu_bus: float = 2.5
    motorcycle_share_default: float = 0.85
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

    def __post_init__(self) -> None:
        if self.offset_method not in OFFSET_METHODS:
            raise ConfigError(f"optimizer.offset_method must be one of {', '.join(OFFSET_METHODS)}, "
                              f"got {self.offset_method!r}")


@dataclass(frozen=True)
class ControlSettings:
    """Central loop cadence and the validation gate."""

    epoch_s: int = 600
    count_interval_s: int = 60
    gate_margin: float = 0.02
    gate_seeds: tuple[int, ...] = (1, 2)
    gate_horizon_s: int = 900
    plan_expiry_s: int = 120
    ack_timeout_s: float = 10.0


@dataclass(frozen=True)
class FieldSettings:
    """Field emulator behaviour."""

    central_silence_timeout_s: float = 900.0
    transition_max_step_s: float = 10.0


@dataclass(frozen=True)
class SecuritySettings:
    """Plan signing (``traffic.security``). Empty paths: development mode, plans go unsigned.

    ``plan_signing_key`` is the centre's Ed25519 private key (PEM);
    ``plan_verify_keys`` the public keys a field controller trusts, comma
    separated so a key can be rotated without a flag day.
    """

    pki_dir: str = ""
    plan_signing_key: str = ""
    plan_verify_keys: str = ""


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
    field_: FieldSettings = field(default_factory=FieldSettings, metadata={"toml": "field"})
    security: SecuritySettings = field(default_factory=SecuritySettings)


def _coerce(value: Any, target_type: Any, where: str) -> Any:
    """Convert a TOML or environment value to the dataclass field's type."""
    type_name = target_type if isinstance(target_type, str) else getattr(target_type, "__name__", str(target_type))
    try:
        if type_name.startswith("tuple"):
            if isinstance(value, str):
                return tuple(int(x) for x in value.split(",") if x.strip())
            return tuple(int(x) for x in value)
        if type_name == "int":
            return int(value)
        if type_name == "float":
            return float(value)
        if type_name == "bool":
            if isinstance(value, str):
                return value.strip().lower() in {"1", "true", "yes", "on"}
            return bool(value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: cannot read {value!r} as {type_name}") from exc


def _section_name(f: dataclasses.Field) -> str:
    return f.metadata.get("toml", f.name)


def _apply(section: Any, values: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(section)}
    updates: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {', '.join(sorted(known))})")
        updates[key] = _coerce(value, known[key].type, f"{where}.{key}")
    return replace(section, **updates)


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Load settings from defaults, the TOML file and the environment.

    ``path`` overrides ``$TRAFFIC_CONFIG``; a missing explicit path is an error,
    a missing default file is not (defaults are meant for a local run).
    """
    env = os.environ if env is None else env
    settings = Settings()
    explicit = path or env.get(f"{ENV_PREFIX}CONFIG")
    config_path = Path(explicit) if explicit else Path(DEFAULT_CONFIG_FILE)
    data: dict[str, Any] = {}
    if config_path.exists():
        try:
            data = tomllib.loads(config_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{config_path}: {exc}") from exc
    elif explicit:
        raise ConfigError(f"configuration file {config_path} does not exist")

    top_updates: dict[str, Any] = {}
    for f in fields(settings):
        name = _section_name(f)
        current = getattr(settings, f.name)
        if dataclasses.is_dataclass(current):
            section_values = dict(data.get(name, {}))
            prefix = f"{ENV_PREFIX}{name.upper()}_"
            for key in (sf.name for sf in fields(current)):
                env_key = prefix + key.upper()
                if env_key in env:
                    section_values[key] = env[env_key]
            top_updates[f.name] = _apply(current, section_values, name)
        else:
            value = env.get(f"{ENV_PREFIX}{name.upper()}", data.get(name, current))
            top_updates[f.name] = _coerce(value, f.type, name)
    unknown = set(data) - {_section_name(f) for f in fields(settings)}
    if unknown:
        raise ConfigError(f"{config_path}: unknown section(s) {', '.join(sorted(unknown))}")
    return replace(settings, **top_updates)

"""Configuration is checked at load: the setting, the value, what is allowed and where it came from.

A value out of range used to be accepted and fail much later (a QoS of 7 at
the first publish, a negative motorcycle pcu as a nonsense plan); a typo'd
key must not silently mean "the default".
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from app.cli import main
from traffic import config
from traffic.config import ControlSettings, DatabaseSettings, MqttSettings, OptimizerSettings, Settings, load_settings
from traffic.errors import ConfigError

SECTIONS = [f.default_factory for f in dataclasses.fields(Settings) if f.default_factory is not dataclasses.MISSING]


def _toml(tmp_path, text: str):
    path = tmp_path / "traffic.toml"
    path.write_text(text)
    return path


def test_every_setting_has_a_check_and_the_defaults_pass_it() -> None:
    for cls in SECTIONS:
        for f in dataclasses.fields(cls):
            assert f.name in config._CHECKS[cls], f"{cls.__name__}.{f.name} has no check"
            assert config.check_value(cls, f.name, getattr(cls(), f.name)) is None
    assert set(config._TOP_CHECKS) == {f.name for f in dataclasses.fields(Settings)
                                       if f.default_factory is dataclasses.MISSING}
    Settings()  # all defaults valid together (cross-field rules too)


@pytest.mark.parametrize("section, key, value, words", [
    ("optimizer", "plan_mode", '"bogus"', ["optimizer.plan_mode", "'bogus'", "pretimed, actuated, free"]),
    ("optimizer", "pcu_motorcycle", "-3", ["optimizer.pcu_motorcycle", "-3", "(0, 10]"]),
    ("mqtt", "qos", "7", ["mqtt.qos", "7", "0, 1, 2"]),
    ("mqtt", "keepalive_s", "0", ["mqtt.keepalive_s", "[1, 65535]"]),
    ("mqtt", "url", '"http://broker:1883"', ["mqtt.url", "mqtt://host"]),
    ("mqtt", "url", '"mqtt://broker:70000"', ["mqtt.url", "1-65535"]),
    ("database", "dsn", '"mysql://db/x"', ["database.dsn", "postgresql://"]),
    ("database", "pool_max", "0", ["database.pool_max", "[1, 1000]"]),
    ("site", "site", '"Hanoi/Old Quarter"', ["site.site", "topic level"]),
    ("site", "timezone", '"Asia/Atlantis"', ["site.timezone", "IANA"]),
    ("ingest", "batch_max_rows", "0", ["ingest.batch_max_rows", "[1, 1000000]"]),
    ("ingest", "batch_max_delay_s", "0", ["ingest.batch_max_delay_s", "(0, 60]"]),
    ("ingest", "share_group", '"a+b"', ["ingest.share_group"]),
    ("optimizer", "offset_method", '"maxband"', ["optimizer.offset_method", "bandwidth, green-wave"]),
    ("optimizer", "smoothing_alpha", "0", ["optimizer.smoothing_alpha", "(0, 1]"]),
    ("optimizer", "motorcycle_share_default", "1.2", ["optimizer.motorcycle_share_default", "[0, 1]"]),
    ("optimizer", "max_green_factor", "0.5", ["optimizer.max_green_factor", "[1, 10]"]),
    ("optimizer", "saturation_flow_pcu_per_lane_h", "inf", ["saturation_flow_pcu_per_lane_h", "finite"]),
    ("control", "gate_margin", "-0.1", ["control.gate_margin", "[0, 1]"]),
    ("control", "gate_seeds", "[]", ["control.gate_seeds", "at least one seed"]),
    ("control", "gate_seeds", "[1, -2]", ["control.gate_seeds", "-2"]),
    ("control", "epoch_s", "0", ["control.epoch_s", "[1, 86400]"]),
    ("control", "ack_timeout_s", "-1.0", ["control.ack_timeout_s", "(0, 3600]"]),
    ("field", "central_silence_timeout_s", "0", ["field.central_silence_timeout_s", "(0, 86400]"]),
    ("field", "transition_max_step_s", "nan", ["field.transition_max_step_s", "finite"]),
])
def test_bad_toml_values_are_refused_with_name_value_and_range(tmp_path, section, key, value, words) -> None:
    path = _toml(tmp_path, f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert str(path) in message  # where the value came from


@pytest.mark.parametrize("env_key, value, words", [
    ("TRAFFIC_MQTT_QOS", "7", ["mqtt.qos", "0, 1, 2"]),
    ("TRAFFIC_OPTIMIZER_PLAN_MODE", "bogus", ["optimizer.plan_mode", "'bogus'"]),
    ("TRAFFIC_OPTIMIZER_PCU_MOTORCYCLE", "-3", ["optimizer.pcu_motorcycle", "(0, 10]"]),
    ("TRAFFIC_OPTIMIZER_PCU_MOTORCYCLE", "nan", ["optimizer.pcu_motorcycle", "finite"]),
    ("TRAFFIC_CONTROL_GATE_SEEDS", "1,1", ["control.gate_seeds", "repeat"]),
    ("TRAFFIC_CONTROL_EPOCH_S", "1.5", ["control.epoch_s", "1.5"]),
    ("TRAFFIC_STATE_DIR", "", ["state_dir", "empty"]),
    ("TRAFFIC_DATABASE_DSN", "just-a-name", ["database.dsn", "key=value"]),
])
def test_bad_environment_overrides_are_refused_and_named(env_key, value, words) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, env={env_key: value, "TRAFFIC_CONFIG": ""})
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert env_key in message


def test_cross_field_rules(tmp_path) -> None:
    with pytest.raises(ConfigError, match="max_cycle_s .* at least min_cycle_s"):
        load_settings(_toml(tmp_path, "[optimizer]\nmin_cycle_s = 200\n"), env={})
    with pytest.raises(ConfigError, match="pool_max .* at least pool_min"):
        load_settings(None, env={"TRAFFIC_DATABASE_POOL_MIN": "9", "TRAFFIC_CONFIG": ""})
    with pytest.raises(ConfigError, match="cert_file and key_file"):
        MqttSettings(cert_file="/etc/c.pem")


def test_unknown_keys_and_sections_name_the_typo(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"unknown setting 'qoss'; did you mean 'qos'"):
        load_settings(_toml(tmp_path, "[mqtt]\nqoss = 1\n"), env={})
    with pytest.raises(ConfigError, match=r"unknown section or setting 'optimiser'; did you mean 'optimizer'"):
        load_settings(_toml(tmp_path, "[optimiser]\nplan_mode = 'free'\n"), env={})
    with pytest.raises(ConfigError, match=r"\[mqtt\] must be a table"):
        load_settings(_toml(tmp_path, "mqtt = 5\n"), env={})


def test_toml_types_must_match(tmp_path) -> None:
    for text in ("[mqtt]\nqos = 1.5\n", "[mqtt]\nqos = true\n", "[site]\nsite = 5\n", "[control]\nepoch_s = 'x'\n",
                 "[optimizer]\npcu_car = false\n"):
        with pytest.raises(ConfigError, match="cannot read"):
            load_settings(_toml(tmp_path, text), env={})
    ok = load_settings(_toml(tmp_path, "[mqtt]\nqos = 2\n[control]\nepoch_s = 300.0\ngate_seeds = [3, 4]\n"), env={})
    assert ok.mqtt.qos == 2 and ok.control.epoch_s == 300 and ok.control.gate_seeds == (3, 4)


def test_sections_built_in_code_are_checked_too() -> None:
    with pytest.raises(ConfigError, match="optimizer.plan_mode"):
        OptimizerSettings(plan_mode="bogus")
    with pytest.raises(ConfigError, match="control.gate_margin"):
        dataclasses.replace(ControlSettings(), gate_margin=2.0)
    with pytest.raises(ConfigError, match="database.dsn"):
        DatabaseSettings(dsn="mysql://x")


@hsettings(max_examples=60, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True, width=64))
def test_a_range_accepts_exactly_its_values(value: float) -> None:
    inside = math.isfinite(value) and 0 < value <= 1
    env = {"TRAFFIC_OPTIMIZER_SMOOTHING_ALPHA": repr(value), "TRAFFIC_CONFIG": ""}
    if inside:
        assert load_settings(None, env=env).optimizer.smoothing_alpha == value
    else:
        with pytest.raises(ConfigError, match="optimizer.smoothing_alpha"):
            load_settings(None, env=env)


def test_the_cli_reports_a_bad_configuration_in_one_line(tmp_path, capsys) -> None:
    path = _toml(tmp_path, "[mqtt]\nqos = 7\n")
    assert main(["-c", str(path), "migrate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "mqtt.qos: 7 is not one of 0, 1, 2" in err and "Traceback" not in err

"""Issue 12 item 6: no permanent plans, replay memory survives a restart, answers only on plan/result.

Real Mosquitto (plain listener), the real :class:`Dispatcher` with a signing
key, emulators that trust the key and judge expiry on the wall clock (as in
the closed loop), and a raw MQTT client standing in for an attacker who
captured genuine signed plans.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_field_emulator_mqtt import Observer

from controller.dispatch import DEFAULT_MAX_EXPIRY_S, Dispatcher
from field_firmware_stubs.emulator import DEFAULT_MAX_PLAN_EXPIRY_S, FieldEmulator
from field_firmware_stubs.samples import four_leg
from traffic import messages as msg
from traffic import topics
from traffic.config import MqttSettings
from traffic.errors import ConfigError, PlanError
from traffic.plan import TimingPlan
from traffic.security.signing import PlanSigner, generate_signing_key

ORIGIN = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
SPLITS = [30.0, 12.0, 26.0, 12.0]
SIGNER = PlanSigner(generate_signing_key())
YEAR_2100 = datetime(2100, 1, 1, tzinfo=UTC).isoformat()


def wall() -> datetime:
    return datetime.now(UTC)


def plan_v(version: int, **changes) -> TimingPlan:
    changes.setdefault("expires_at", (wall() + timedelta(seconds=120)).isoformat())
    return replace(four_leg("c1").plan_from_splits(SPLITS, version=version, created_by="test"), **changes)


def make_emulator(url: str, site: str, state_dir: Path | None = None) -> FieldEmulator:
    return FieldEmulator(four_leg("c1"), site=site, mqtt=MqttSettings(url=url), clock_origin=ORIGIN,
                         expiry_clock=wall, plan_verifier=SIGNER.verifier(), state_dir=state_dir)


def send(observer: Observer, site: str, plan_or_payload: TimingPlan | bytes, corr: bytes, *,
         response: str | None = None) -> msg.PlanResult:
    """Publish a command as a raw client and return the field's answer (found by correlation data)."""
    payload = plan_or_payload.to_json() if isinstance(plan_or_payload, TimingPlan) else plan_or_payload
    result_topic = topics.topic(site, "c1", topics.PLAN_RESULT)
    observer.send_plan(topics.topic(site, "c1", topics.PLAN_SET), payload,
                       response=response or result_topic, correlation=corr)
    m = observer.wait_for(lambda m: m[0] == result_topic and m[2] is not None
                          and getattr(m[2], "CorrelationData", None) == corr)
    return msg.decode_result(m[1])


def run_until_plan(emu: FieldEmulator, t: float, plan_id: str) -> float:
    while not (emu.plan.plan_id == plan_id and emu.mode == msg.MODE_CENTRAL):
        t += 1.0
        emu.tick(t, {})
        assert t < 2000, (emu.mode, emu.plan.plan_id)
    return t


@pytest.fixture
def observer(mqtt_url, site):
    obs = Observer(mqtt_url, site)
    yield obs
    obs.close()


def test_the_dispatcher_clamps_a_year_2100_expiry_and_the_field_refuses_one_sent_around_it(mqtt_url, site,
                                                                                          observer):
    assert DEFAULT_MAX_EXPIRY_S == DEFAULT_MAX_PLAN_EXPIRY_S == 900.0  # the centre's default expiry is 120 s
    emu = make_emulator(mqtt_url, site)
    emu.start()
    try:
        emu.tick(0.0, {})
        with Dispatcher(MqttSettings(url=mqtt_url), site, client_id=f"central-{site}", plan_signer=SIGNER) as d:
            # the caller supplies a year-2100 expiry: the plan goes out valid for expiry_s only
            permanent = plan_v(2, expires_at=YEAR_2100)
            before = wall()
            answer = d.dispatch(permanent, four_leg("c1"), expiry_s=60, timeout_s=5)
            assert answer.status == msg.ACCEPTED
            sent = d.signed_plan(permanent.plan_id)
            assert sent is not None and SIGNER.verifier().verify(sent) == SIGNER.key_id
            expires = datetime.fromisoformat(sent.expires_at)
            assert before + timedelta(seconds=59) <= expires <= wall() + timedelta(seconds=60)
            # a caller asking for a day of validity gets the maximum
            long = plan_v(3, expires_at=None)
            before = wall()
            assert d.dispatch(long, four_leg("c1"), expiry_s=86_400, timeout_s=5).status == msg.ACCEPTED
            expires = datetime.fromisoformat(d.signed_plan(long.plan_id).expires_at)
            assert before + timedelta(seconds=899) <= expires <= wall() + timedelta(seconds=900)
            # an already expired plan is not signed nor sent
            stale = plan_v(4, expires_at=(wall() - timedelta(seconds=1)).isoformat())
            with pytest.raises(PlanError, match="expired"):
                d.dispatch(stale, four_leg("c1"), expiry_s=60, timeout_s=2)
            assert d.signed_plan(stale.plan_id) is None
        # the year-2100 plan, signed with the genuine key but sent around the dispatcher: refused
        forged = SIGNER.sign(plan_v(5, expires_at=YEAR_2100))
        answer = send(observer, site, forged, b"2100")
        assert (answer.status, answer.rule) == (msg.REJECTED, "EXPIRED") and "900 s" in answer.reason
        # just inside the bound is fine, just beyond it is not
        beyond = SIGNER.sign(plan_v(6, expires_at=(wall() + timedelta(seconds=960)).isoformat()))
        assert send(observer, site, beyond, b"beyond").rule == "EXPIRED"
        inside = SIGNER.sign(plan_v(7, expires_at=(wall() + timedelta(seconds=880)).isoformat()))
        assert send(observer, site, inside, b"inside").status == msg.ACCEPTED
    finally:
        emu.stop(discard_session=True)


def test_the_field_refuses_a_properly_signed_plan_without_expiry(mqtt_url, site, observer):
    emu = make_emulator(mqtt_url, site)
    emu.start()
    try:
        emu.tick(0.0, {})
        no_expiry = SIGNER.sign(plan_v(2, expires_at=None))
        assert "expires_at" not in json.loads(no_expiry.to_json()) or json.loads(no_expiry.to_json())[
            "expires_at"] is None
        assert SIGNER.verifier().verify(no_expiry) == SIGNER.key_id  # genuinely signed
        answer = send(observer, site, no_expiry, b"noexp")
        assert (answer.status, answer.rule) == (msg.REJECTED, "EXPIRED") and "no expiry" in answer.reason
        for t in range(1, 5):
            emu.tick(float(t), {})
        assert emu.mode == msg.MODE_TOD and emu.stats.plans_accepted == 0 and emu.stats.fallbacks == 0
    finally:
        emu.stop(discard_session=True)


def test_replay_memory_survives_a_controller_restart(mqtt_url, site, observer, tmp_path):
    state = tmp_path / "field-state"
    emu = make_emulator(mqtt_url, site, state)
    emu.start()
    v2 = SIGNER.sign(plan_v(2))
    v3 = SIGNER.sign(plan_v(3))
    try:
        emu.tick(0.0, {})
        assert send(observer, site, v2, b"v2").status == msg.ACCEPTED
        t = run_until_plan(emu, 0.0, v2.plan_id)
        assert send(observer, site, v3, b"v3").status == msg.ACCEPTED
        run_until_plan(emu, t, v3.plan_id)
    finally:
        emu.stop(discard_session=True)
    files = sorted(p.name for p in state.iterdir())
    assert files == [f"field-{site}-c1.json"]  # written atomically: no temporary file left behind
    saved = json.loads((state / files[0]).read_text())
    assert saved["central_version"] == 3 and saved["readmit_plan_id"] == v3.plan_id
    assert saved["active_plan"]["plan_id"] == v3.plan_id and v2.plan_id in saved["seen_plan_ids"]

    # the controller restarts (power cycle): a captured v2, an older version under a new id, and a
    # same-version plan are all still refused; the centre's current plan is taken back
    emu = make_emulator(mqtt_url, site, state)
    emu.start()
    try:
        emu.tick(1000.0, {})
        assert emu.mode == msg.MODE_TOD  # starts on its own plan, not on a plan it cannot vouch for
        replay = send(observer, site, v2, b"replay-v2")
        assert (replay.status, replay.rule) == (msg.REJECTED, "REPLAY")
        older = send(observer, site, SIGNER.sign(plan_v(2)), b"older")
        assert (older.status, older.rule) == (msg.REJECTED, "STALE_VERSION")
        same = send(observer, site, SIGNER.sign(plan_v(3)), b"same")
        assert (same.status, same.rule) == (msg.REJECTED, "STALE_VERSION")
        for k in range(1, 5):
            emu.tick(1000.0 + k, {})
        assert emu.plan.plan_id == emu.tod_plan.plan_id and emu.stats.plans_accepted == 0
        # the centre's heartbeat of the plan in force (fresh expiry, re-signed) brings it back
        again = SIGNER.sign(replace(v3, expires_at=(wall() + timedelta(seconds=120)).isoformat()))
        assert send(observer, site, again, b"v3-again").status == msg.ACCEPTED
        run_until_plan(emu, 1004.0, v3.plan_id)
        v4 = SIGNER.sign(plan_v(4))
        assert send(observer, site, v4, b"v4").status == msg.ACCEPTED
    finally:
        emu.stop(discard_session=True)
    assert json.loads((state / f"field-{site}-c1.json").read_text())["central_version"] == 4


def test_without_a_state_dir_a_restart_forgets_and_a_corrupt_state_file_is_refused(tmp_path):
    """What the documentation says about the in-memory mode, and a damaged file never silently ignored."""
    v2, v3 = SIGNER.sign(plan_v(2)), SIGNER.sign(plan_v(3))
    first = make_emulator("mqtt://127.0.0.1:1", "s")  # offline: commands handed to the MQTT entry point
    first.tick(0.0, {})
    for p in (v2, v3):
        first._on_plan_message(p.to_json(), None, b"c")  # noqa: SLF001
    restarted = make_emulator("mqtt://127.0.0.1:1", "s")
    restarted.tick(0.0, {})
    restarted._on_plan_message(v2.to_json(), None, b"c")  # noqa: SLF001
    assert restarted.stats.plans_accepted == 1  # the documented limit of the in-memory mode
    state = tmp_path / "state"
    state.mkdir()
    (state / "field-s-c1.json").write_text("{\"schema\": \"field-state/1\", \"central")
    with pytest.raises(ConfigError, match="unreadable"):
        make_emulator("mqtt://127.0.0.1:1", "s", state)


def test_a_response_topic_pointing_at_the_counts_topic_is_ignored(mqtt_url, site, observer):
    emu = make_emulator(mqtt_url, site)
    emu.start()
    try:
        emu.tick(0.0, {})
        counts = topics.topic(site, "c1", topics.COUNTS)
        result_topic = topics.topic(site, "c1", topics.PLAN_RESULT)
        plan = SIGNER.sign(plan_v(2))
        answer = send(observer, site, plan, b"hijack", response=counts)
        assert answer.status == msg.ACCEPTED and answer.plan_id == plan.plan_id
        garbage = send(observer, site, b"{not json", b"hijack-2", response=counts)
        assert garbage.rule == "MALFORMED"
        t = run_until_plan(emu, 0.0, plan.plan_id)
        observer.wait_for(lambda m: m[0] == result_topic and msg.decode_result(m[1]).status == msg.APPLIED)
        time.sleep(0.3)  # anything misdirected would have arrived by now
        on_counts = observer.on(counts)
        # only the controller's own count reports went there (decoded strictly as counts/1), no answer
        assert all(json.loads(m[1])["schema"] == "counts/1" for m in on_counts)
        assert [msg.decode_counts(m[1]).controller_id for m in on_counts] == ["c1"] * len(on_counts)
        assert not any(b"plan-result" in m[1] or b"hijack" in bytes(getattr(m[2], "CorrelationData", b"") or b"")
                       for m in on_counts)
        assert t < 200
    finally:
        emu.stop(discard_session=True)

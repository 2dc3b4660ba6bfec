"""One source for the wire contract (issue #12 item 8): traffic/wire.py -> decoders and docs/asyncapi.yaml.

* the committed docs/asyncapi.yaml is exactly what ``traffic.contract`` generates;
* real messages of every type, made by the code that puts them on the wire
  (``to_json`` of the message classes the emulator and the link publish, a
  plan signed by ``PlanSigner`` as the dispatcher sends it, the default plan
  mode included), validate against the generated JSON schemas (jsonschema,
  draft 2020-12);
* what the published schema refuses, the decoders refuse too.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest
import yaml

from field_firmware_stubs.samples import four_leg
from traffic import contract, messages, wire
from traffic.errors import MessageError, PlanError
from traffic.plan import PhaseTiming, TimingPlan
from traffic.security.signing import PlanSigner, generate_signing_key

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "asyncapi.yaml"
NOW = datetime(2026, 3, 1, 7, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def doc():
    return yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))


def _validator(doc, message_id: str) -> jsonschema.Draft202012Validator:
    payload = doc["components"]["messages"][message_id]["payload"]
    assert payload["schemaFormat"] == contract.SCHEMA_FORMAT
    root = {**payload["schema"], "components": doc["components"]}  # refs are #/components/schemas/...
    jsonschema.Draft202012Validator.check_schema(root)
    return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())


def test_committed_asyncapi_is_the_generated_one():
    assert DOC_PATH.read_text(encoding="utf-8") == contract.render(), (
        "docs/asyncapi.yaml is stale: run 'python -m traffic.contract > docs/asyncapi.yaml'")


def test_document_has_operations_security_and_every_message(doc):
    assert doc["asyncapi"] == "3.0.0"
    assert doc["servers"]["production"]["protocol"] == "secure-mqtt"
    assert doc["servers"]["production"]["host"].endswith(":8883")
    assert doc["components"]["securitySchemes"]["mtls"]["type"] == "X509"
    for op in doc["operations"].values():
        channel = op["channel"]["$ref"].split("/")[-1]
        assert channel in doc["channels"]
    assert {c["address"].split("{controller}/")[1] for c in doc["channels"].values()} == {
        "counts", "events", "status", "plan/set", "plan/result", "plan/active"}
    text = DOC_PATH.read_text(encoding="utf-8")
    for limit in ("262144", "10000", "0..255", "ed25519-jcs", "created_at"):
        assert limit in text, limit


def _real_messages() -> dict[str, list[bytes]]:
    spec = four_leg("j1")
    plan = TimingPlan(controller_id="j1", phases=tuple(
        PhaseTiming(p.phase, p.greens, 30.0, 7.0, 40.0, 2.0, 3.6, 2.0, 7.0 if i == 0 else 0.0, 9.0 if i == 0 else 0.0)
        for i, p in enumerate(spec.phases)),
        patternCycleTime=30.0 * len(spec.phases), mode="free", created_by="optimizer")
    plan = replace(plan, expires_at=(NOW + timedelta(minutes=2)).isoformat())
    signed = PlanSigner(generate_signing_key()).sign(plan)
    return {
        "countReport": [messages.CountReport("j1", 3, NOW, 60, (
            messages.CountRecord("d1", 12, 35.5), messages.CountRecord("d2", 0, 0, 0),
            messages.CountRecord("d3", 40, 100.0, 17))).to_json()],
        "eventBatch": [messages.EventBatch("j1", 9, ((NOW, 1, 2), (NOW, 8, 2), (NOW, 255, 65535))).to_json(),
                       messages.EventBatch("j1", 10, ()).to_json()],
        "status": [messages.StatusMessage("j1", messages.ONLINE, messages.MODE_CENTRAL, signed.plan_id, 1, NOW,
                                          "ok").to_json(),
                   messages.StatusMessage("j1", messages.OFFLINE).to_json()],
        "planResult": [messages.PlanResult("j1", signed.plan_id, messages.ACCEPTED).to_json(),
                       messages.PlanResult("j1", signed.plan_id, messages.REJECTED, "SIGNATURE", "bad").to_json(),
                       messages.PlanResult("j1", signed.plan_id, messages.APPLIED, at=NOW).to_json()],
        "timingPlan": [signed.to_json(), plan.to_json(),
                       replace(plan, mode="pretimed", expires_at=None).to_json()],
    }


def test_real_messages_of_every_type_validate_against_the_generated_schemas(doc):
    real = _real_messages()
    assert set(real) == set(doc["components"]["messages"]) - {"activePlan"} | {"timingPlan"}
    for message_id, payloads in real.items():
        validator = _validator(doc, message_id)
        for payload in payloads:
            errors = sorted(validator.iter_errors(json.loads(payload)), key=str)
            assert not errors, f"{message_id}: {errors[0].message} at {list(errors[0].absolute_path)}"
    # and the decoders take them back
    messages.decode_counts(real["countReport"][0])
    messages.decode_events(real["eventBatch"][0])
    messages.decode_status(real["status"][0])
    messages.decode_result(real["planResult"][2])
    TimingPlan.from_json(real["timingPlan"][0])


@pytest.mark.parametrize("message_id, change, decode", [
    ("timingPlan", {"mode": "sometimes"}, lambda b: TimingPlan.from_json(b)),
    ("timingPlan", {"signature": "ed25519:abc:def"}, lambda b: TimingPlan.from_json(b)),
    ("status", {"mode": "disco"}, messages.decode_status),
    ("status", {"detail": 7}, messages.decode_status),
    ("planResult", {"status": "maybe"}, messages.decode_result),
    ("countReport", {"interval_s": 0}, messages.decode_counts),
    ("eventBatch", {"events": [["2026-03-01T07:00:00+00:00", 256, 0]]}, messages.decode_events),
])
def test_what_the_schema_refuses_the_decoder_refuses(doc, message_id, change, decode):
    payload = json.loads(_real_messages()[message_id][0])
    payload.update(change)
    assert list(_validator(doc, message_id).iter_errors(payload)), "the schema should refuse this"
    with pytest.raises((MessageError, PlanError)):
        decode(json.dumps(payload).encode())


def test_decoder_bounds_come_from_the_contract():
    assert messages.MAX_PAYLOAD_BYTES == wire.MAX_PAYLOAD_BYTES
    assert messages.MAX_EVENTS == wire.MAX_EVENTS and messages.MAX_RECORDS == wire.MAX_RECORDS

"""Speed of the central side: ``python -m controller.bench [--mqtt mqtt://127.0.0.1:1883]``.

Numbers go here, not into timed tests (a shared 2-core machine makes timed
tests flaky). Reports, as JSON on stdout:

* ``optimize_ms_per_intersection`` - one :func:`controller.optimizer.optimize`
  call including its safety check;
* ``check_plan_us`` - one central safety check;
* ``corridor_ms`` - :func:`optimize_corridor` for a 20-intersection corridor;
* ``webster_vectorised_us_per_intersection`` - sizing 10,000 intersections at once;
* with ``--mqtt``: ``dispatch_ack_ms`` (publish -> field's ``accepted``) against
  a minimal in-process responder on the given broker.

Measured here (2 shared cores): optimize about 0.5 ms per intersection,
check_plan 30-60 us, a 20-intersection corridor 25-40 ms, vectorised Webster
about 1.2 us per intersection. The dispatch round trip is about 45 ms against
a Mosquitto with default settings and about 2 ms with ``set_tcp_nodelay true``
in mosquitto.conf: the broker's Nagle algorithm holds the field's answer
behind the PUBACK it just sent until the centre's delayed ACK (40 ms) comes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from controller import webster
from controller.demand import PhaseDemand
from controller.examples import four_leg, uniform_corridor
from controller.optimizer import optimize, optimize_corridor
from controller.safety import check_plan
from traffic.config import MqttSettings, OptimizerSettings


def _per_call(fn: Callable[[], Any], repeat: int) -> float:
    """Median seconds per call over ``repeat`` calls (after one warm-up)."""
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _demand(cid: str, flows: tuple[float, float]) -> PhaseDemand:
    return PhaseDemand(cid, None, None, (1, 2), flows, flows)


def pure_numbers(repeat: int = 200) -> dict[str, float]:
    settings = OptimizerSettings()
    spec = four_leg("b1")
    incumbent = spec.default_plan()
    demand = _demand("b1", (700.0, 400.0))
    plan = optimize(spec, demand, incumbent, settings, version=2).plan
    corridor = uniform_corridor(20)
    demands = {s.controller_id: _demand(s.controller_id, (500.0 + 20 * k, 350.0))
               for k, s in enumerate(corridor.intersections)}
    incumbents = {s.controller_id: s.default_plan() for s in corridor.intersections}
    versions = {s.controller_id: 2 for s in corridor.intersections}
    n = 10_000
    rng = np.random.default_rng(1)
    y = rng.uniform(0.05, 0.25, size=(n, 4))
    lost = np.full(4, 5.0)
    minimum = np.full(4, 12.0)

    def vectorised() -> None:
        c0 = webster.optimum_cycle(lost.sum(), y.sum(axis=1), min_cycle_s=40, max_cycle_s=150)
        webster.allocate_splits(c0, y, lost, minimum)

    return {
        "optimize_ms_per_intersection": round(1e3 * _per_call(
            lambda: optimize(spec, demand, incumbent, settings, version=2), repeat), 3),
        "check_plan_us": round(1e6 * _per_call(lambda: check_plan(plan, spec), repeat), 1),
        "corridor_ms": round(1e3 * _per_call(
            lambda: optimize_corridor(corridor, demands, incumbents, settings, versions), max(5, repeat // 20)), 2),
        "webster_vectorised_us_per_intersection": round(1e6 * _per_call(vectorised, 10) / n, 3),
    }


def dispatch_numbers(url: str, repeat: int = 30) -> dict[str, float]:
    """Publish -> accepted round trip through a real broker with a minimal responder."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from controller.dispatch import Dispatcher, _no_delay
    from traffic import messages, topics
    from traffic.plan import TimingPlan

    site = f"bench{uuid.uuid4().hex[:8]}"
    spec = four_leg("b1")
    mqtt = MqttSettings(url=url)
    responder = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)

    def answer(client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        plan = TimingPlan.from_json(msg.payload)
        correlation = getattr(msg.properties, "CorrelationData", None)
        response_topic = getattr(msg.properties, "ResponseTopic", None)
        if correlation is None or response_topic is None:  # not a plan/set from the dispatcher
            return
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = correlation
        result = messages.PlanResult(plan.controller_id, plan.plan_id, messages.ACCEPTED)
        client.publish(response_topic, result.to_json(), qos=1, properties=props)

    responder.on_message = answer
    responder.on_connect = lambda client, *_: _no_delay(client)  # as a real field stack would
    responder.connect(mqtt.host, mqtt.port)
    responder.subscribe(topics.topic(site, "b1", topics.PLAN_SET), qos=1)
    responder.loop_start()
    try:
        with Dispatcher(mqtt, site, client_id=f"bench-{uuid.uuid4().hex[:6]}") as dispatcher:
            time.sleep(0.3)  # let the responder's subscription settle
            samples = []
            for k in range(repeat):
                plan = spec.plan_from_splits([40.0, 30.0], version=k + 2)
                t0 = time.perf_counter()
                dispatcher.dispatch(plan, spec, expiry_s=60, timeout_s=5)
                samples.append(time.perf_counter() - t0)
    finally:
        responder.disconnect()
        responder.loop_stop()
    return {"dispatch_ack_ms_median": round(1e3 * statistics.median(samples), 2),
            "dispatch_ack_ms_max": round(1e3 * max(samples), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mqtt", default="", help="broker URL to measure dispatch round trips")
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args(argv)
    numbers = pure_numbers(args.repeat)
    if args.mqtt:
        numbers.update(dispatch_numbers(args.mqtt))
    sys.stdout.write(json.dumps(numbers, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: a city's detectors through one Mosquitto and N ingest workers, reconciled exactly.

``controllers`` x ``detectors`` report every ``interval_s`` for
``duration_s``, published by ``publishers`` processes (``sensors.loadgen``,
many controllers per MQTT connection, paced to the wall clock and spread
over each interval), consumed by ``workers`` processes
(``python -m sensors.worker``, one MQTT 5 shared subscription), stored in
PostgreSQL. Then:

* **reconciliation**: rows stored vs records published (and acknowledged by
  the broker), and the sum of vehicle counts against the generator's known
  total: lost = published - stored; duplicated = rows beyond that (the
  primary key makes it 0 unless something is badly wrong; the workers'
  ``duplicates`` counter shows redeliveries that were absorbed);
* **end-to-end latency**, publish -> queryable row: a probe polls the
  database every ``--probe-every`` seconds for detector ``d00`` of
  ``--probes`` controllers spread over the fleet; latency = first poll that
  sees the row - the publisher's wall-clock time for that message (so it
  includes up to one poll period of probe delay);
* **keeping up**: the publishers' worst lag behind their schedule, and how
  long the workers needed after the last publish to store the rest;
* CPU seconds used by each process (broker, workers, publishers).

Prints markdown tables. Default: the issue's scale (2,000 x 16 every second
for 5 minutes); ``--controllers 500 --duration-s 60`` for a short run.
The broker is a private Mosquitto with ``max_queued_messages 0`` (see
docs/pipeline.md on broker settings) unless ``--mqtt-url`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import psycopg

from app.services import PrivateBroker
from sensors.loadgen import DEFAULT_ORIGIN, LoadGenerator, controller_id, expected_total
from traffic import db
from traffic.config import MqttSettings

log = logging.getLogger("bench.pipeline")
ROOT = Path(__file__).resolve().parents[1]
BROKER_CONFIG = ("max_queued_messages 0",)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _publisher(mqtt_url: str, site: str, first: int, count: int, detectors: int, interval_s: int,
               intervals: int, out: str, ready: Any, go: Any) -> None:
    """Child process: one slice of the fleet, paced to the wall clock."""
    gen = LoadGenerator(MqttSettings(url=mqtt_url), site=site, controllers=count, detectors=detectors,
                        interval_s=interval_s, connections=2, first_controller=first)
    gen.start()
    ready.set()
    go.wait()
    result = gen.run(intervals, real_time=True, wait_acks_s=300)
    gen.stop()
    np.save(out + ".npy", result.publish_times)
    Path(out + ".json").write_text(json.dumps({"messages": result.messages, "records": result.records,
                                               "acked": result.acked, "seconds": result.seconds,
                                               "behind_s": result.behind_s, "cpu_s": time.process_time()}))


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children, from /proc (0 if gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(x) for x in fields[11:15]) / _CLK_TCK
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class Probe:
    """Polls the database for the probe controllers' rows; records when each first became visible."""

    dsn: str
    controllers: list[int]
    every_s: float
    interval_s: int

    def __post_init__(self) -> None:
        self.seen: dict[tuple[int, int], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ids = [controller_id(c) for c in self.controllers]
        self._index = {controller_id(c): c for c in self.controllers}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        low = DEFAULT_ORIGIN
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.wait(self.every_s):
                rows = conn.execute(
                    "SELECT controller_id, interval_start FROM detector_counts"
                    " WHERE detector_id = 'd00' AND controller_id = ANY(%s) AND interval_start >= %s",
                    (self._ids, low)).fetchall()
                now = time.time()
                newest = low
                for cid, start in rows:
                    k = int((start - DEFAULT_ORIGIN).total_seconds()) // self.interval_s
                    self.seen.setdefault((self._index[cid], k), now)
                    newest = max(newest, start)
                low = max(low, newest - timedelta(seconds=20))


def _stored(dsn: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        rows, total = conn.execute("SELECT count(*), coalesce(sum(vehicle_count), 0) FROM detector_counts").fetchone()
    return int(rows), int(total)


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    name = f"bench_pipeline_{uuid.uuid4().hex[:8]}"
    db.create_database(args.admin_dsn, name)
    dsn = urlparse(args.admin_dsn)._replace(path=f"/{name}").geturl()
    broker = None
    workers: list[subprocess.Popen[bytes]] = []
    pubs: list[Any] = []
    site = f"city{uuid.uuid4().hex[:6]}"
    intervals = args.duration_s // args.interval_s
    try:
        mqtt_url = args.mqtt_url
        if not mqtt_url:
            broker = PrivateBroker(workdir, config_lines=BROKER_CONFIG)
            broker.start()
            mqtt_url = broker.url
        db.migrate(dsn)
        for i in range(args.workers):
            argv = [sys.executable, "-m", "sensors.worker", "--client-id", f"{site}-w{i}", "--site", site,
                    "--mqtt-url", mqtt_url, "--dsn", dsn, "--spool-dir", str(workdir / f"spool{i}"),
                    "--no-migrate", "--stats-every", "1", "--stats-file", str(workdir / f"w{i}.json"),
                    "--session-expiry-s", "600"]
            workers.append(subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL,
                                            stderr=(workdir / f"w{i}.log").open("ab")))
        deadline = time.monotonic() + 60
        while not all((workdir / f"w{i}.json").exists() for i in range(args.workers)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start; see {workdir}")
            time.sleep(0.1)

        ctx = multiprocessing.get_context("spawn")
        go = ctx.Event()
        per = -(-args.controllers // args.publishers)
        for p in range(args.publishers):
            first, count = p * per, min(per, args.controllers - p * per)
            if count <= 0:
                continue
            ready = ctx.Event()
            proc = ctx.Process(target=_publisher, daemon=True,
                               args=(mqtt_url, site, first, count, args.detectors, args.interval_s, intervals,
                                     str(workdir / f"pub{p}"), ready, go))
            proc.start()
            if not ready.wait(60):
                raise RuntimeError("publisher did not start")
            pubs.append((proc, first, count))

        probe_ids = sorted({int(x) for x in np.linspace(0, args.controllers - 1, args.probes)})
        probe = Probe(dsn, probe_ids, args.probe_every, args.interval_s)
        pids = {"broker": broker.pid if broker else None, **{f"worker{i}": w.pid for i, w in enumerate(workers)}}
        cpu0 = {k: _cpu_seconds(v) for k, v in pids.items() if v}
        probe.start()
        t0 = time.monotonic()
        go.set()
        for proc, _, _ in pubs:
            proc.join(args.duration_s + 600)
        published_at = time.monotonic()
        pub_results = [json.loads((workdir / f"pub{p}.json").read_text()) for p in range(len(pubs))]
        published = sum(r["records"] for r in pub_results)
        expected = expected_total(args.controllers, args.detectors, range(intervals))
        drain_deadline = time.monotonic() + args.drain_s
        while _stored(dsn)[0] < published and time.monotonic() < drain_deadline:
            time.sleep(0.5)
        drained_at = time.monotonic()
        probe.stop()
        cpu = {k: _cpu_seconds(v) - cpu0.get(k, 0.0) for k, v in pids.items() if v}
        stored, total = _stored(dsn)
        pub_results = [json.loads((workdir / f"pub{p}.json").read_text()) for p in range(len(pubs))]
        cpu.update({f"publisher{p}": r["cpu_s"] for p, r in enumerate(pub_results)})

        latencies = []
        times = {p: np.load(workdir / f"pub{p}.npy") for p in range(len(pubs))}
        for (c, k), seen_at in probe.seen.items():
            for p, (_proc, first, count) in enumerate(pubs):
                if first <= c < first + count and k < times[p].shape[0]:
                    t_pub = times[p][k, c - first]
                    if not np.isnan(t_pub):
                        latencies.append(seen_at - t_pub)
        lat = np.array(latencies) if latencies else np.array([np.nan])
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(60)
        wstats = [json.loads((workdir / f"w{i}.json").read_text()) for i in range(len(workers))]
        return {
            "controllers": args.controllers, "detectors": args.detectors, "interval_s": args.interval_s,
            "duration_s": args.duration_s, "workers": args.workers, "publishers": len(pubs),
            "target_msgs_s": args.controllers / args.interval_s,
            "target_records_s": args.controllers * args.detectors / args.interval_s,
            "published_msgs": sum(r["messages"] for r in pub_results),
            "published_records": published, "broker_acked_msgs": sum(r["acked"] for r in pub_results),
            "publish_seconds": published_at - t0,
            "publisher_max_behind_s": max(r["behind_s"] for r in pub_results),
            "stored": stored, "lost": max(0, published - stored), "duplicated": max(0, stored - published),
            "sum_matches": total == expected, "drain_after_publish_s": drained_at - published_at,
            "achieved_records_s": stored / max(1e-9, drained_at - t0),
            "latency_samples": int(np.isfinite(lat).sum()),
            "latency_p50_s": float(np.nanpercentile(lat, 50)), "latency_p95_s": float(np.nanpercentile(lat, 95)),
            "latency_p99_s": float(np.nanpercentile(lat, 99)), "latency_max_s": float(np.nanmax(lat)),
            "worker_stats": wstats, "cpu_s": cpu, "load_avg": os.getloadavg()[0], "cpus": os.cpu_count(),
            "workdir": str(workdir),
        }
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
        for proc, _, _ in pubs:
            if proc.is_alive():
                proc.terminate()
        if broker is not None:
            broker.stop()
        db.drop_database(args.admin_dsn, name)


def render(r: dict[str, Any]) -> str:
    per_worker = ", ".join(f"{w['stored']:,}" for w in r["worker_stats"])
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in r["cpu_s"].items())
    lines = [
        f"\n{r['controllers']} controllers x {r['detectors']} detectors every {r['interval_s']} s for "
        f"{r['duration_s']} s; {r['publishers']} publisher processes, {r['workers']} workers, one Mosquitto; "
        f"load average {r['load_avg']:.1f} on {r['cpus']} CPUs\n",
        "| measure | value |", "|---|---:|",
        f"| target | {r['target_msgs_s']:,.0f} msgs/s = {r['target_records_s']:,.0f} records/s |",
        f"| published (broker acked) | {r['published_msgs']:,} msgs ({r['broker_acked_msgs']:,}) = "
        f"{r['published_records']:,} records in {r['publish_seconds']:.1f} s |",
        f"| publishers' worst lag behind schedule | {r['publisher_max_behind_s']:.2f} s |",
        f"| stored | {r['stored']:,} |",
        f"| lost | {r['lost']:,} |",
        f"| duplicated | {r['duplicated']:,} |",
        f"| sum of counts matches | {'yes' if r['sum_matches'] else 'NO'} |",
        f"| redeliveries absorbed (workers' duplicates) | {sum(w['duplicates'] for w in r['worker_stats']):,} |",
        f"| stored per worker | {per_worker} |",
        f"| drain after the last publish | {r['drain_after_publish_s']:.1f} s |",
        f"| achieved (stored / wall time) | {r['achieved_records_s']:,.0f} records/s |",
        f"| latency publish -> queryable, p50 / p95 / p99 / max ({r['latency_samples']} samples) | "
        f"{r['latency_p50_s']:.2f} / {r['latency_p95_s']:.2f} / {r['latency_p99_s']:.2f} / "
        f"{r['latency_max_s']:.2f} s |",
        f"| CPU seconds | {cpu} |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--controllers", type=int, default=2000)
    parser.add_argument("--detectors", type=int, default=16)
    parser.add_argument("--interval-s", type=int, default=1)
    parser.add_argument("--duration-s", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--probe-every", type=float, default=0.1)
    parser.add_argument("--drain-s", type=float, default=300)
    parser.add_argument("--admin-dsn", default=os.environ.get("TRAFFIC_TEST_ADMIN_DSN",
                                                              "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--mqtt-url", default="")
    parser.add_argument("--json", default="", help="also write the numbers here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run(args)
    sys.stdout.write(render(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0 if result["lost"] == 0 and result["sum_matches"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

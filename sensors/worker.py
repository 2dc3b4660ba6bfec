"""One ingest worker as its own process: ``python -m sensors.worker``.

Why a separate entry point next to ``traffic ingest``: to scale out, several
workers run side by side (same host or not) and split the load through the
MQTT 5 shared subscription, and each one needs its *own* persistent session,
so its own stable client id and its own spool folder. The fault tests and
``bench/pipeline.py`` start workers this way and kill them with SIGKILL.

Settings come from :func:`traffic.config.load_settings` (TOML file plus
``TRAFFIC_*`` variables); the options below override them.

Stopping. SIGTERM or SIGINT hands the worker's share back: it unsubscribes
(so the broker routes everything to the other workers of the shared
subscription from then on), keeps consuming until its session has delivered
what it still held, makes all of it durable (database or spool) and
acknowledges it. Without that, Mosquitto keeps queueing this worker's share
in its offline session, stranded until the worker returns. The session
itself stays, so a restart under the same ``--client-id`` resumes it and
subscribes again. ``--keep-share`` stops the old way (the session keeps its
subscriptions and the broker queues the share for it): for a *single*
worker being restarted, where nobody else would take the messages and the
broker would drop them.

``--retire`` retires a client id for good, as a one-shot command: it resumes
the session, hands the share back, drains what the session holds into the
database, replays its spool, ends the session (expiry 0) and exits 0 (1 if it
could not drain within ``--retire-timeout-s``; the session is then kept).
Use it after stopping a worker that will not come back, or for a worker that
crashed and will not be restarted, whose session would otherwise hold its
share until the session expires (``--session-expiry-s``) and is discarded.
Every ``--stats-every`` seconds, and at exit, one JSON line of counters goes
to stdout (or ``--stats-file``, rewritten atomically).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

from sensors.ingest import DEFAULT_SESSION_EXPIRY_S, IngestService, IngestStats
from sensors.monitor import Monitor
from traffic import db
from traffic.config import Settings, load_settings
from traffic.errors import TrafficError

log = logging.getLogger("sensors.worker")

__all__ = ["GC_THRESHOLD", "build_settings", "main", "tune_gc"]


# Generation-0 threshold for the cyclic garbage collector in a worker process.
GC_THRESHOLD = (100_000, 50, 1000)


def tune_gc() -> None:
    """Make the cyclic GC rare in a process that is mostly an ingest worker.

    Why: a worker allocates a few container objects per detector record and,
    under a backlog, keeps hundreds of thousands of them queued; with the
    default threshold (700) the collector then runs every few messages and
    walks all of them, which profiling showed to cost as much as everything
    else together (records per CPU-second went up about 1.7x with this).
    Ingest data holds no reference cycles, so nothing is leaked by
    collecting rarely. Process-wide, so it is called by the worker entry
    point (and the benchmarks), not by :class:`IngestService`, which may be
    embedded in a process with other needs.
    """
    gc.set_threshold(*GC_THRESHOLD)
    gc.freeze()  # what exists at start (modules, settings) is never garbage


def build_settings(args: argparse.Namespace) -> Settings:
    """Settings from the environment/TOML with the command-line overrides applied."""
    settings = load_settings(args.config)
    if args.mqtt_url:
        settings = replace(settings, mqtt=replace(settings.mqtt, url=args.mqtt_url))
    if args.dsn:
        settings = replace(settings, database=replace(settings.database, dsn=args.dsn))
    ingest = settings.ingest
    if args.spool_dir:
        ingest = replace(ingest, spool_dir=args.spool_dir)
    if args.batch_max_rows:
        ingest = replace(ingest, batch_max_rows=args.batch_max_rows)
    if args.batch_max_delay_s is not None:
        ingest = replace(ingest, batch_max_delay_s=args.batch_max_delay_s)
    settings = replace(settings, ingest=ingest)
    if not settings.database.dsn or not settings.mqtt.url:
        raise TrafficError("a worker needs a database DSN and a broker URL (--dsn/--mqtt-url or TRAFFIC_* variables)")
    return settings


def _write_stats(stats: IngestStats, path: str) -> None:
    line = json.dumps(dataclasses.asdict(stats))
    if not path:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
        return
    tmp = Path(path + ".tmp")
    tmp.write_text(line + "\n")
    os.replace(tmp, path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sensors.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="TOML file (default: $TRAFFIC_CONFIG or ./traffic.toml)")
    parser.add_argument("--client-id", required=True, help="stable per worker: names its persistent session")
    parser.add_argument("--site", default=None)
    parser.add_argument("--mqtt-url", default="")
    parser.add_argument("--dsn", default="")
    parser.add_argument("--spool-dir", default="", help="distinct per worker on one host")
    parser.add_argument("--batch-max-rows", type=int, default=0)
    parser.add_argument("--batch-max-delay-s", type=float, default=None)
    parser.add_argument("--receive-maximum", type=int, default=1000)
    parser.add_argument("--session-expiry-s", type=int, default=DEFAULT_SESSION_EXPIRY_S)
    parser.add_argument("--db-timeout-s", type=float, default=3.0)
    parser.add_argument("--replay-interval-s", type=float, default=1.0)
    parser.add_argument("--no-migrate", action="store_true", help="do not apply migrations at start")
    parser.add_argument("--stats-every", type=float, default=5.0)
    parser.add_argument("--health-every-s", type=float, default=60.0,
                        help="detector health round every N s (0: off); one worker per round (advisory lock)")
    parser.add_argument("--atspm-every-s", type=float, default=60.0,
                        help="ATSPM aggregation of controller_events every N s (0: off)")
    parser.add_argument("--stats-file", default="")
    parser.add_argument("--log-level", default="WARNING")
    parser.add_argument("--keep-share", action="store_true",
                        help="on SIGTERM keep the shared subscription in the session (single worker restarts)")
    parser.add_argument("--retire", action="store_true",
                        help="one-shot: drain this client id's session and spool, end the session, exit")
    parser.add_argument("--retire-timeout-s", type=float, default=60.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        settings = build_settings(args)
        if not args.no_migrate:
            db.migrate(settings.database.dsn)
        service = IngestService(settings, dsn=settings.database.dsn, site=args.site, client_id=args.client_id,
                                receive_maximum=args.receive_maximum, session_expiry_s=args.session_expiry_s,
                                db_timeout_s=args.db_timeout_s, replay_interval_s=args.replay_interval_s,
                                monitor=Monitor(settings.database.dsn, health_every_s=args.health_every_s,
                                                atspm_every_s=args.atspm_every_s))
        tune_gc()
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        service.start()
    except TrafficError as exc:
        log.error("%s", exc)
        return 2
    if args.retire:
        ok = service.stop(timeout=args.retire_timeout_s, retire=True)
        _write_stats(service.stats, args.stats_file)
        log.log(logging.INFO if ok else logging.ERROR, "worker %s %s", args.client_id,
                "retired: session ended" if ok else "not retired: session kept, run --retire again")
        return 0 if ok else 1
    log.info("worker %s running for site %s", args.client_id, service.site)
    try:
        while not stop.wait(args.stats_every):
            _write_stats(service.stats, args.stats_file)
    finally:
        service.stop(handover=not args.keep_share)
        _write_stats(service.stats, args.stats_file)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

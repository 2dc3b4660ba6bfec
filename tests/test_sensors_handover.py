"""A worker leaving the shared subscription leaves no data behind.

Real Mosquitto (2.0) behaviour these tests pin down: a member of a shared
subscription whose persistent session is offline still gets its round-robin
share, queued in that session (stranded until it returns, discarded if the
session expires). So a worker that stops must unsubscribe first (handover),
and a worker that crashed and will not return must be retired, which drains
its session. Every test reconciles exactly: 200 reports sent, 200 stored.
"""

from __future__ import annotations

import subprocess

from test_sensors_faults import ROOT, Worker, eventually
from test_sensors_ingest import (  # noqa: F401 - fixtures used by name
    WAIT_S,
    _eventually,
    make_service,
    query,
    report,
)
from test_sensors_poison import publish_many

from traffic import topics

REPORTS = 200


def two_hundred(site: str) -> list[tuple[str, bytes]]:
    """200 reports from 20 controllers, 2 detectors each: 400 rows."""
    return [(topics.topic(site, f"c{i % 20}", topics.COUNTS), report(f"c{i % 20}", i // 20, 2).to_json())
            for i in range(REPORTS)]


def stored_reports(dsn: str) -> int:
    return query(dsn, "SELECT count(DISTINCT (controller_id, interval_start)) FROM detector_counts")[0][0]


def test_clean_stop_with_handover_leaves_everything_to_the_other(settings, pg_dsn, site, mqtt_url):
    a = make_service(settings, pg_dsn, site, client_id=f"{site}-a")
    b = make_service(settings, pg_dsn, site, client_id=f"{site}-b")
    a.start()
    b.start()
    try:
        assert a.stop(handover=True)
        publish_many(mqtt_url, two_hundred(site))
        assert _eventually(lambda: b.stats.received >= REPORTS) and b.drain(WAIT_S)
        assert b.stats.received == REPORTS and b.stats.stored == 2 * REPORTS
    finally:
        b.stop(retire=True)
    assert stored_reports(pg_dsn) == REPORTS
    # Its session was kept (a restart resumes it) but has nothing queued.
    a = make_service(settings, pg_dsn, site, client_id=f"{site}-a")
    a.start()
    try:
        assert not _eventually(lambda: a.stats.received > 0, timeout=1.0)
    finally:
        a.stop(retire=True)


def test_stop_keeping_the_share_strands_half_until_retired(settings, pg_dsn, site, mqtt_url):
    """What the broker does with a stopped member's share, and how retiring recovers it."""
    a = make_service(settings, pg_dsn, site, client_id=f"{site}-a")
    b = make_service(settings, pg_dsn, site, client_id=f"{site}-b")
    a.start()
    b.start()
    try:
        a.stop()                                     # keeps the share, like a crash would
        publish_many(mqtt_url, two_hundred(site))
        assert b.drain(WAIT_S, quiet_s=1.0)
        taken_by_b = b.stats.received
        assert 0 < taken_by_b < REPORTS              # the broker queued the rest for the offline session
        assert stored_reports(pg_dsn) == taken_by_b
        # Retire a: resume its session, hand back, drain, end the session.
        a = make_service(settings, pg_dsn, site, client_id=f"{site}-a")
        a.start()
        assert a.stop(timeout=WAIT_S, retire=True)
        assert a.stats.received == REPORTS - taken_by_b
        assert stored_reports(pg_dsn) == REPORTS
        # After retiring, nothing is routed to a's id any more.
        publish_many(mqtt_url, [(topics.topic(site, "c0", topics.COUNTS), report("c0", 99, 2).to_json())])
        assert _eventually(lambda: b.stats.received == taken_by_b + 1)
    finally:
        b.stop(retire=True)
    assert stored_reports(pg_dsn) == REPORTS + 1


def test_sigterm_of_one_of_two_worker_processes_hands_its_share_back(tmp_path, pg_dsn, mqtt_url, site):
    w1 = Worker(tmp_path, "w1", mqtt_url=mqtt_url, dsn=pg_dsn, site=site).start()
    w2 = Worker(tmp_path, "w2", mqtt_url=mqtt_url, dsn=pg_dsn, site=site).start()
    try:
        w1.stop()                                    # SIGTERM: clean stop
        assert w1.proc is not None and w1.proc.returncode == 0
        publish_many(mqtt_url, two_hundred(site))
        assert eventually(lambda: stored_reports(pg_dsn) == REPORTS, 20), stored_reports(pg_dsn)
        assert eventually(lambda: w2.stats().get("received") == REPORTS, 5), w2.stats()
    finally:
        w2.stop()
    assert stored_reports(pg_dsn) == REPORTS
    assert query(pg_dsn, "SELECT count(*) FROM detector_counts") == [(2 * REPORTS,)]


def test_worker_retire_command_recovers_a_crashed_workers_share(tmp_path, pg_dsn, mqtt_url, site):
    w1 = Worker(tmp_path, "w1", mqtt_url=mqtt_url, dsn=pg_dsn, site=site).start()
    w2 = Worker(tmp_path, "w2", mqtt_url=mqtt_url, dsn=pg_dsn, site=site).start()
    try:
        w1.kill()                                    # SIGKILL: its session keeps the shared subscription
        publish_many(mqtt_url, two_hundred(site))
        assert eventually(lambda: 0 < stored_reports(pg_dsn) < REPORTS
                          and w2.stats().get("received") == stored_reports(pg_dsn), 10)
        stranded = REPORTS - stored_reports(pg_dsn)
        argv = [a for a in w1.argv if a != "--stats-file" and a != str(w1.stats_file)]
        done = subprocess.run([*argv, "--retire", "--retire-timeout-s", "20", "--stats-file",
                               str(tmp_path / "retire.json")], cwd=ROOT, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert stored_reports(pg_dsn) == REPORTS
        assert f'"received": {stranded}' in (tmp_path / "retire.json").read_text()
    finally:
        w2.stop()
    assert query(pg_dsn, "SELECT count(*) FROM detector_counts") == [(2 * REPORTS,)]

"""``traffic up``: the whole stack of one site on one machine, each part its own supervised OS process.

Started in this order, each as ``python -m app.cli ...`` in its own process
group, output appended to ``<state_dir>/logs/<name>.log``:

1. the broker and the database: the configured ones, else a private
   Mosquitto and PostgreSQL cluster in the state folder (``app.services``;
   Mosquitto is watched and restarted like the others, PostgreSQL runs
   under ``pg_ctl``);
2. ``ingest-1`` .. ``ingest-N``: ``traffic ingest`` workers sharing the load
   (MQTT 5 shared subscription), each with its own session and spool;
3. ``twin``: ``traffic field twin``, the SUMO world of the site's model;
4. ``serve``: ``traffic serve``, the centre;
5. ``field-<id>``: ``traffic field run --world sumo-twin``, one per controller.

A process that exits is restarted after a back-off (1 s, doubling to 30 s;
back to 1 s once it has run 60 s). Ctrl-C / SIGTERM stops everything:
SIGTERM to each process group (fields first, broker and database last),
SIGKILL to what is still there after the grace period, so nothing is left
behind. The status view (a table, also ``<state_dir>/run/up.json`` and
``traffic status --site DIR``) shows what runs, its health (each service's
``/health``) and the plans in force.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.runtime import SiteClock, read_json, run_dir, write_json_atomic

log = logging.getLogger(__name__)

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 60.0
GRACE_S = 20.0


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started: float = 0.0
    backoff: float = BACKOFF_START_S
    next_start: float = 0.0
    last_exit: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    @property
    def state(self) -> str:
        if self.proc is None:
            return "waiting" if self.last_exit is None else f"backoff (exit {self.last_exit})"
        return "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"


def _health(state_dir: Path, service: str, timeout_s: float = 1.0) -> tuple[bool | None, dict[str, Any]]:
    """A service's /health (port from its run-state file); None when it has no endpoint yet."""
    data = read_json(run_dir(state_dir) / f"{service}.json")
    if not data or "port" not in data:
        return None, {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{data['port']}/health", timeout=timeout_s) as resp:
            body = json.loads(resp.read())
            return bool(body.get("healthy")), body
    except urllib.error.HTTPError as exc:
        try:
            return False, json.loads(exc.read())
        except ValueError:
            return False, {}
    except (OSError, ValueError):
        return None, {}


class Supervisor:
    """Starts, watches, restarts and stops the processes of one site (see the module docstring)."""

    def __init__(self, site: Any, *, workers: int = 2, speed: float = 1.0, log_json: bool = False,
                 config_path: Path | None = None, extra_env: dict[str, str] | None = None,
                 first_epoch_after_s: float | None = None) -> None:
        self.site = site
        self.workers = workers
        self.clock = SiteClock(speed)
        self.log_json = log_json
        self.state = Path(site.state_dir)
        self.logs = self.state / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.children: list[Child] = []
        self.handles: Any = None
        self.env: dict[str, str] = dict(os.environ)
        self.env.update(extra_env or {})
        self.first_epoch_after_s = first_epoch_after_s
        self._stopping = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ start
    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "app.cli", *args, *(["--log-json"] if self.log_json else [])]

    def start(self) -> None:
        from app.serve import ensure_dev_keys
        from app.services import ensure_services
        from traffic import db

        settings = self.site.settings
        self.handles = ensure_services(settings, state_dir=self.state)
        settings = self.handles.apply(settings)
        self.env["TRAFFIC_MQTT_URL"] = self.handles.mqtt_url
        self.env["TRAFFIC_DATABASE_DSN"] = self.handles.database_dsn
        self.env["PYTHONUNBUFFERED"] = "1"
        db.migrate(self.handles.database_dsn)
        ensure_dev_keys(settings)  # before any field agent starts: they trust its public half
        root = str(self.site.root)
        clock = self.clock.args()
        for n in range(1, self.workers + 1):
            cid = f"ingest-{n}"
            self._add(cid, self._cli("ingest", "--site-dir", root, "--client-id", cid, "--metrics-port", "0"))
        self._add("twin", self._cli("field", "twin", "--site", root, *clock, "--metrics-port", "0"))
        serve = self._cli("serve", "--site", root, *clock, "--metrics-port", "0")
        if self.first_epoch_after_s is not None:
            serve += ["--first-epoch-after", f"{self.first_epoch_after_s:g}"]
        self._add("serve", serve)
        for cid in self.site.controller_ids:
            self._add(f"field-{cid}", self._cli("field", "run", "--site", root, "--controller", cid,
                                                "--world", "sumo-twin", *clock, "--metrics-port", "0"))
        for child in self.children:
            self._spawn(child)

    def _add(self, name: str, argv: list[str]) -> None:
        self.children.append(Child(name, argv, self.logs / f"{name}.log"))

    def _spawn(self, child: Child) -> None:
        with open(child.log_path, "ab") as out:
            out.write(f"\n=== {datetime.now(UTC).isoformat()} start: {' '.join(child.argv)}\n".encode())
            out.flush()
            child.proc = subprocess.Popen(child.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=self.env, cwd=str(self.site.root), start_new_session=True)
        child.started = time.monotonic()
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    # ------------------------------------------------------------------ watch
    def poll(self) -> None:
        """One round: restart what died (after its back-off), restart the private broker if it died."""
        if self._stopping:
            return
        now = time.monotonic()
        broker = getattr(self.handles, "broker", None)
        if broker is not None and not broker.running:
            log.warning("the private broker died: restarting it")
            try:
                broker.start()
            except Exception:  # noqa: BLE001 - try again next round
                log.exception("broker restart failed")
        for child in self.children:
            if child.proc is not None and child.proc.poll() is not None:
                code = child.proc.returncode
                ran = now - child.started
                child.backoff = BACKOFF_START_S if ran >= STABLE_AFTER_S else min(BACKOFF_MAX_S, child.backoff * 2)
                delay = BACKOFF_START_S if ran >= STABLE_AFTER_S else child.backoff / 2
                child.history.append({"exit": code, "ran_s": round(ran, 1), "at": datetime.now(UTC).isoformat()})
                child.last_exit, child.proc, child.next_start = code, None, now + delay
                log.warning("%s exited with %s after %.0f s; restart in %.0f s", child.name, code, ran, delay)
            if child.proc is None and child.last_exit is not None and now >= child.next_start:
                child.restarts += 1
                self._spawn(child)

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for child in self.children:
            healthy, body = _health(self.state, child.name) if child.pid else (None, {})
            rows.append({"name": child.name, "pid": child.pid, "state": child.state, "restarts": child.restarts,
                         "uptime_s": round(time.monotonic() - child.started) if child.pid else 0,
                         "healthy": healthy, "detail": _summary(child.name, body)})
        return rows

    def write_status(self) -> list[dict[str, Any]]:
        rows = self.status()
        broker = getattr(self.handles, "broker", None)
        postgres = getattr(self.handles, "postgres", None)
        write_json_atomic(run_dir(self.state) / "up.json", {
            "site": self.site.name, "pid": os.getpid(), "updated": datetime.now(UTC).isoformat(),
            "mqtt_url": getattr(self.handles, "mqtt_url", ""),
            "database_dsn": getattr(self.handles, "database_dsn", ""),
            "broker_pid": broker.pid if broker is not None else None,
            "database_pid": postgres.pid if postgres is not None else None, "processes": rows})
        return rows

    def run(self, stop: threading.Event, *, status_every_s: float = 10.0, console: Any = None) -> int:
        last = 0.0
        try:
            while not stop.is_set():
                self.poll()
                if time.monotonic() - last >= status_every_s:
                    rows = self.write_status()
                    if console is not None:
                        console.print(render_status(self.site.name, rows))
                    last = time.monotonic()
                stop.wait(0.5)
        finally:
            self.stop()
        return 0

    # ------------------------------------------------------------------ stop
    def stop(self, grace_s: float = GRACE_S) -> None:
        """SIGTERM every process group (fields first), SIGKILL what is left after ``grace_s``; then the services."""
        self._stopping = True
        order = ([c for c in self.children if c.name.startswith("field-")]
                 + [c for c in self.children if c.name == "serve"]
                 + [c for c in self.children if c.name == "twin"]
                 + [c for c in self.children if c.name.startswith("ingest-")])
        for group in (order[:-self.workers or None], order[len(order) - self.workers:]):
            for child in group:
                _signal_group(child, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for child in group:
                if child.proc is None:
                    continue
                try:
                    child.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop within %.0f s: SIGKILL", child.name, grace_s)
                _signal_group(child, signal.SIGKILL)
                try:
                    child.proc.wait(5)
                except subprocess.TimeoutExpired:
                    log.error("%s (pid %d) survived SIGKILL", child.name, child.proc.pid)
        if self.handles is not None:
            self.handles.close()
        write_json_atomic(run_dir(self.state) / "up.json", {"site": self.site.name, "stopped": True,
                                                           "updated": datetime.now(UTC).isoformat(),
                                                           "processes": []})


def _signal_group(child: Child, sig: int) -> None:
    if child.proc is None:
        return
    try:
        os.killpg(child.proc.pid, sig)  # the child leads its own group (start_new_session)
    except ProcessLookupError:
        pass


def _summary(name: str, body: dict[str, Any]) -> str:
    if not body:
        return ""
    if name.startswith("field-"):
        return (f"{body.get('mode', '?')} plan v{body.get('plan_version', '?')} by {body.get('plan_by', '?')}"
                f"{'' if body.get('link') else ' (link down)'}")
    if name == "serve":
        force = body.get("plans_in_force") or {}
        plans = " ".join(f"{c}:v{p['version']}" for c, p in sorted(force.items()))
        return f"epochs {body.get('epochs', 0)}; in force {plans or '-'}"
    if name == "twin":
        agents = len(body.get("agents") or [])
        return f"t={body.get('sim_time_s') or 0:.0f} s, agents {agents}, lag {body.get('lag_s')} s"
    if name.startswith("ingest"):
        stats = body.get("stats") or {}
        return f"stored {stats.get('stored', 0)} dead {stats.get('dead_lettered', 0)} spooled {stats.get('spooled', 0)}"
    return ""


def render_status(site: str, rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(title=f"site {site}  {datetime.now().strftime('%H:%M:%S')}")
    for col in ("process", "pid", "state", "restarts", "up (s)", "health", "detail"):
        table.add_column(col)
    for r in rows:
        health = {True: "[green]ok[/]", False: "[red]unhealthy[/]", None: "-"}[r["healthy"]]
        table.add_row(r["name"], str(r["pid"] or "-"), r["state"], str(r["restarts"]), str(r["uptime_s"]), health,
                      r["detail"])
    return table


def status_from_files(state_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """The status ``traffic up`` last wrote, with each process's health asked again (``traffic status``)."""
    data = read_json(run_dir(state_dir) / "up.json") or {}
    rows = []
    for row in data.get("processes", []):
        healthy, body = _health(state_dir, row["name"])
        rows.append({**row, "healthy": healthy, "detail": _summary(row["name"], body) or row.get("detail", "")})
    return data.get("site", "?"), rows

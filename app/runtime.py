"""What every long-running service shares: the site clock, health + Prometheus metrics, JSON logs, run state.

* :class:`SiteClock`: the clock services agree on. At ``speed`` 1 it is the
  wall clock. A SUMO twin run accelerated (``--speed 10``) makes every
  service of the site run on ``origin + (wall - origin) * speed``, so the
  counts the field stamps, the centre's epoch windows and the field's
  silence timeout all speak the same time. Plan *expiry* stays on the wall
  clock on both sides (it guards the transport).
* :class:`ServiceEndpoint`: one HTTP server per process (``127.0.0.1``,
  ``--metrics-port``, 0 = a free port) serving ``/metrics`` (prometheus-client
  text format, from the service's own registry) and ``/health`` (JSON, 200
  when healthy, 503 when not). The port goes into the run-state file.
* run-state files: ``<state_dir>/run/<service>.json`` (pid, port, started,
  health summary), read by ``traffic up``'s status view and ``traffic status``.
* :func:`configure_logging`: ``--log-json`` makes every record one JSON line
  on stderr (ts, level, logger, msg, service, exc).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

log = logging.getLogger(__name__)

HealthFn = Callable[[], "tuple[bool, dict[str, Any]]"]


# --------------------------------------------------------------------------- clock
class SiteClock:
    """``origin + (wall - origin) * speed`` (see the module docstring); speed 1 is the wall clock."""

    def __init__(self, speed: float = 1.0, origin: datetime | None = None) -> None:
        if not (speed > 0 and speed <= 1000):
            raise ValueError(f"speed must be in (0, 1000], got {speed}")
        self.speed = float(speed)
        wall = datetime.now(UTC)
        self.origin = (origin or wall.replace(second=0, microsecond=0)).astimezone(UTC)

    def now(self) -> datetime:
        if self.speed == 1.0:
            return datetime.now(UTC)
        wall = time.time()
        return self.origin + timedelta(seconds=(wall - self.origin.timestamp()) * self.speed)

    def wall_seconds(self, site_seconds: float) -> float:
        """How long ``site_seconds`` of site time take on the wall clock."""
        return site_seconds / self.speed

    def args(self) -> list[str]:
        """Command-line options that give a child process the same clock."""
        return ["--speed", f"{self.speed:g}", "--clock-origin", self.origin.isoformat()]


def parse_origin(text: str | None) -> datetime | None:
    if not text:
        return None
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"--clock-origin {text!r} must carry a UTC offset")
    return value


# --------------------------------------------------------------------------- logs
class JsonFormatter(logging.Formatter):
    """One JSON object per record (for journald, Loki, Elasticsearch)."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
        }
        if self.service:
            data["service"] = self.service
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure_logging(*, json_lines: bool, service: str, level: int = logging.INFO) -> None:
    """Service logging on stderr: plain text, or JSON lines with ``json_lines``."""
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service) if json_lines else
                         logging.Formatter(f"%(asctime)s %(levelname)-7s {service} %(name)s: %(message)s"))
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("paho", "psycopg", "psycopg.pool", "distributed", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# --------------------------------------------------------------------------- run state
def run_dir(state_dir: str | Path) -> Path:
    path = Path(state_dir) / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, default=str)
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- health + metrics
class ServiceEndpoint:
    """``/metrics`` and ``/health`` of one service process, plus its run-state file."""

    def __init__(self, service: str, *, state_dir: str | Path, port: int = 0, host: str | None = None,
                 health: HealthFn | None = None) -> None:
        # 127.0.0.1 unless TRAFFIC_METRICS_HOST says otherwise (0.0.0.0 in a container Prometheus scrapes)
        host = host or os.environ.get("TRAFFIC_METRICS_HOST", "127.0.0.1")
        self.service = service
        self.registry = CollectorRegistry()
        self._health = health or (lambda: (True, {}))
        self._state_file = run_dir(state_dir) / f"{service}.json"
        self._started = datetime.now(UTC)
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                try:
                    if self.path.startswith("/metrics"):
                        body, ctype, code = generate_latest(endpoint.registry), CONTENT_TYPE_LATEST, 200
                    elif self.path.startswith("/health"):
                        ok, detail = endpoint.health()
                        body = json.dumps({"service": endpoint.service, "healthy": ok, **detail},
                                          default=str).encode()
                        ctype, code = "application/json", 200 if ok else 503
                    else:
                        body, ctype, code = b"not found\n", "text/plain", 404
                except Exception as exc:  # noqa: BLE001 - a probe must get an answer
                    body, ctype, code = f"error: {exc}\n".encode(), "text/plain", 500
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"{service}-http", daemon=True)

    def health(self) -> tuple[bool, dict[str, Any]]:
        try:
            return self._health()
        except Exception as exc:  # noqa: BLE001
            return False, {"error": f"{type(exc).__name__}: {exc}"}

    def start(self) -> ServiceEndpoint:
        self._thread.start()
        self.write_state()
        log.info("%s: health and metrics on http://127.0.0.1:%d/", self.service, self.port)
        return self

    def write_state(self, **extra: Any) -> None:
        ok, detail = self.health()
        write_json_atomic(self._state_file, {"service": self.service, "pid": os.getpid(), "port": self.port,
                                             "started": self._started.isoformat(), "healthy": ok,
                                             "detail": detail, "updated": datetime.now(UTC).isoformat(),
                                             **extra})

    def stop(self) -> None:
        """Close the endpoint; the run-state file stays with ``stopped`` (the last numbers, for the record)."""
        self._server.shutdown()
        self._server.server_close()
        data = read_json(self._state_file) or {}
        if data.get("pid") == os.getpid():
            data.update(stopped=True, healthy=False, updated=datetime.now(UTC).isoformat())
            write_json_atomic(self._state_file, data)


def stop_event_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (the service then stops cleanly)."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)
    return stop

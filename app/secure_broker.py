"""A private Mosquitto with the production TLS listener and ACL (tests, secured local demos).

Built on :class:`app.services.PrivateBroker` so the process handling
(child process, parent-death signal, cleanup at exit) is shared. That broker
keeps its own plain listener, which it uses to see that Mosquitto is up; here
that listener admits nobody (``allow_anonymous false`` and no password file:
every CONNECT is refused), and all real traffic goes through the extra TLS
listener configured from the PKI folder exactly as ``mosquitto.conf`` of
``traffic pki init`` does.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import TracebackType

from app.services import LOCALHOST, PrivateBroker, find_free_port, port_open
from traffic.config import MqttSettings
from traffic.errors import ServiceError
from traffic.security.mosquitto_config import extra_listener_lines
from traffic.security.pki import PkiLayout, mqtt_settings_for

__all__ = ["SecureBroker"]


class SecureBroker:
    """Mosquitto on 127.0.0.1 with a TLS listener requiring client certificates from the PKI's CA."""

    def __init__(self, pki_dir: str | Path, state_dir: str | Path, *, tls_port: int | None = None,
                 startup_timeout_s: float = 10.0) -> None:
        self.layout = PkiLayout(Path(pki_dir).resolve())
        self.tls_port = tls_port or find_free_port()
        self.startup_timeout_s = startup_timeout_s
        self._broker = PrivateBroker(Path(state_dir), allow_anonymous=False, startup_timeout_s=startup_timeout_s,
                                     config_lines=extra_listener_lines(self.layout, self.tls_port, LOCALHOST))

    @property
    def url(self) -> str:
        return f"mqtts://{LOCALHOST}:{self.tls_port}"

    @property
    def plain_port(self) -> int:
        """The refuse-everyone plain listener (what a client without TLS would reach)."""
        return self._broker.port

    @property
    def running(self) -> bool:
        return self._broker.running

    @property
    def log_path(self) -> Path:
        return self._broker.log_path

    def settings_for(self, identity: str, base: MqttSettings | None = None) -> MqttSettings:
        """Client settings logging in as ``identity`` (a controller id, ``ingest`` or ``central``)."""
        return mqtt_settings_for(base or MqttSettings(), self.layout.root, identity, host=LOCALHOST,
                                 port=self.tls_port)

    def start(self) -> SecureBroker:
        self._broker.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not port_open(self.tls_port):
            if time.monotonic() > deadline or not self._broker.running:
                self._broker.stop()
                raise ServiceError(f"mosquitto TLS listener on port {self.tls_port} did not open")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._broker.stop()

    def __enter__(self) -> SecureBroker:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

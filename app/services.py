"""Embedded local services: a private Mosquitto broker and a private PostgreSQL cluster.

Why: the demo must run on a laptop with nothing configured, and some tests
need a broker or cluster with their own configuration. When the settings
name a broker URL or a database DSN those are used as they are; otherwise
:func:`ensure_services` starts private ones under ``settings.state_dir``.

Both services are our children in spirit: they are stopped by the context
manager, by :meth:`stop`, and by an ``atexit`` hook, so a crash, Ctrl-C or an
exception never leaves a stray broker or postmaster behind. Mosquitto runs
as a direct child (not daemonised) with a parent-death signal, so it dies
even if we are killed outright. PostgreSQL is started with ``pg_ctl`` (it
daemonises); a cluster found running from an earlier, killed run is stopped
and restarted with the current configuration.

PostgreSQL refuses to run as root: when the effective uid is 0 its commands
run as the ``postgres`` system user via ``runuser`` and its folders are
handed to that user; if that user cannot reach the state folder (a clone
under a 0700 home), the cluster lives in ``$TMPDIR/traffic-pg-<hash>``
instead, still re-used from run to run. Mosquitto, as root, is started as the
``mosquitto`` user (via ``setpriv``) when that user can reach its folder.
"""

from __future__ import annotations

import atexit
import ctypes
import glob
import hashlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

from traffic.config import Settings
from traffic.errors import ServiceError, StorageError

log = logging.getLogger(__name__)

LOCALHOST = "127.0.0.1"
DEFAULT_DATABASE = "traffic"
PG_SUPERUSER = "postgres"
_LOG_TAIL_LINES = 30
_PR_SET_PDEATHSIG = 1
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes; leave room for "/.s.PGSQL.NNNNN"


def find_free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port that was free a moment ago (the OS picks it).

    There is an unavoidable window before the service binds it; the services
    below report a clear error if someone else wins that race.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = LOCALHOST, timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def port_free(port: int, host: str = LOCALHOST) -> bool:
    """True when we could bind ``host:port`` ourselves right now.

    With SO_REUSEADDR, as Mosquitto and PostgreSQL bind: connections of a
    stopped broker lingering in TIME_WAIT must not keep it from restarting
    on its port (clients reconnect to that port); a live listener still
    makes the port busy.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


# MQTT 3.1.1 CONNECT: clean session, keepalive 10 s, empty client id.
_MQTT_CONNECT = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 10, 0, 0])
_MQTT_CONNACK = 0x20


def mqtt_answers(port: int, host: str = LOCALHOST, timeout_s: float = 1.0) -> bool:
    """True when an MQTT broker (not just any listener) answers CONNECT with CONNACK.

    Why not a bare TCP probe: another program on the port would pass it while
    our broker has already died of "address in use".
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(_MQTT_CONNECT)
            reply = sock.recv(4)
    except OSError:
        return False
    return len(reply) >= 2 and reply[0] == _MQTT_CONNACK


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def _is_root() -> bool:
    return os.geteuid() == 0


def _system_user(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _reachable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """True if ``user`` may traverse every ancestor of ``path`` (needs x on each)."""
    groups = {user.pw_gid} | {g for g in os.getgrouplist(user.pw_name, user.pw_gid)}
    for parent in path.resolve().parents:
        st = parent.stat()
        if st.st_uid == user.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid in groups:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
    return True


def _hand_to(path: Path, user: pwd.struct_passwd, mode: int = 0o700) -> None:
    """Make ``path`` (recursively) owned by ``user`` so a service running as it can write."""
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid, follow_symlinks=False)
    os.chown(path, user.pw_uid, user.pw_gid)
    path.chmod(mode)


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask the kernel to SIGTERM the child when its parent dies (Linux only)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (PID 1 in containers may not reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class _Service:
    """Shared lifecycle: context manager, atexit cleanup, idempotent stop."""

    def __enter__(self) -> _Service:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.stop()
        except ServiceError:
            if exc is None:
                raise
            # never hide the original error behind a cleanup failure
            log.exception("stopping %s failed while handling another error", type(self).__name__)

    def start(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _register_cleanup(self) -> None:
        atexit.register(self._atexit_stop)

    def _unregister_cleanup(self) -> None:
        atexit.unregister(self._atexit_stop)

    def _atexit_stop(self) -> None:
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - interpreter is exiting; log and carry on
            log.exception("cleanup of %s at exit failed", type(self).__name__)


class PrivateBroker(_Service):
    """A Mosquitto broker on a private 127.0.0.1 port, state kept in ``state_dir``.

    Use as a context manager; ``url`` is ``mqtt://127.0.0.1:PORT``. Extra
    ``config_lines`` are appended verbatim (e.g. ``max_inflight_messages 10``)
    so tests can exercise broker settings without touching the shared broker.

    Durability: ``persistence true`` in ``state_dir``; :meth:`stop` sends
    SIGTERM, on which Mosquitto writes its database, so a stop/start keeps
    every persistent session and its queued QoS 1 messages. A crash or
    SIGKILL loses what changed since the last periodic save, hence
    ``autosave_interval`` (seconds, default 1) instead of Mosquitto's 1800.
    Mosquitto saves periodically, never per message: messages it PUBACKed
    within the last ``autosave_interval_s`` before a crash are lost. It never
    saves *shared* subscriptions (2.0.x): after a restart a ``$share``
    subscriber has its session and queue back but not its subscription until
    it subscribes again, and the broker answers PUBACK 0x10 (no matching
    subscribers) and drops what is published meanwhile; the field's outbox
    (``field_firmware_stubs.outbox``) re-sends those.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int | None = None,
        config_lines: Sequence[str] = (),
        allow_anonymous: bool = True,
        startup_timeout_s: float = 10.0,
        executable: str = "mosquitto",
        autosave_interval_s: int = 1,
    ) -> None:
        self.state_dir = Path(state_dir).resolve() / "mosquitto"
        self.autosave_interval_s = autosave_interval_s
        self._requested_port = port
        self.port = port or 0
        self.config_lines = tuple(config_lines)
        self.allow_anonymous = allow_anonymous
        self.startup_timeout_s = startup_timeout_s
        self.executable = executable
        self.conf_path = self.state_dir / "mosquitto.conf"
        self.log_path = self.state_dir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._run_as: pwd.struct_passwd | None = None

    @property
    def url(self) -> str:
        if not self.running:
            raise ServiceError("private broker is not running")
        return f"mqtt://{LOCALHOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _config_text(self) -> str:
        lines = [
            "# written by app.services.PrivateBroker; rewritten on every start",
            f"listener {self.port} {LOCALHOST}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            # plan commands are small: without this, Nagle + delayed ACK add ~40 ms per round trip
            "set_tcp_nodelay true",
            "persistence true",
            f"persistence_location {self.state_dir}/",
            # save every N seconds (not after N changes): a crash loses at most that much
            "autosave_on_changes false",
            f"autosave_interval {int(self.autosave_interval_s)}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if _is_root() and self._run_as is None:
            # no unprivileged user can reach the folder (or setpriv is missing):
            # stay root rather than lose the parent-death signal (local demo only)
            lines.append("user root")
        lines.extend(self.config_lines)
        return "\n".join(lines) + "\n"

    def _argv(self, exe: str) -> list[str]:
        """The command line; as root, drop to ``mosquitto`` *before* exec.

        Why not let mosquitto drop privileges itself: the kernel clears the
        parent-death signal on a credential change, so a broker that drops by
        itself would outlive a killed parent. ``setpriv --pdeathsig`` sets it
        again after the switch.
        """
        self._run_as = None
        argv = [exe, "-c", str(self.conf_path)]
        if not _is_root():
            return argv
        user = _system_user("mosquitto")
        setpriv = shutil.which("setpriv")
        if user is None or setpriv is None or not _reachable_by(self.state_dir, user):
            return argv
        _hand_to(self.state_dir, user, 0o755)
        self._run_as = user
        return [
            setpriv,
            f"--reuid={user.pw_uid}",
            f"--regid={user.pw_gid}",
            "--init-groups",
            "--pdeathsig=TERM",
            "--",
            *argv,
        ]

    def start(self) -> None:
        """Write the config, start mosquitto as a child, wait for the port to accept."""
        if self.running:
            return
        exe = shutil.which(self.executable)
        if exe is None:
            raise ServiceError(f"{self.executable!r} not found on PATH; install the mosquitto package")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = self._requested_port or find_free_port()
        if not port_free(self.port):
            raise ServiceError(f"cannot start mosquitto: port {self.port} on {LOCALHOST} is already in use")
        argv = self._argv(exe)
        self.conf_path.write_text(self._config_text())
        log_file = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
        try:
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - no threads touch the child before exec
            )
        except OSError as exc:
            raise ServiceError(f"cannot start mosquitto: {exc}") from exc
        finally:
            log_file.close()
        self._register_cleanup()
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                self._unregister_cleanup()
                raise ServiceError(
                    f"mosquitto exited with code {code} (port {self.port}); log tail:\n{_log_tail(self.log_path)}"
                )
            if mqtt_answers(self.port):
                log.info("private broker on %s:%d (pid %d)", LOCALHOST, self.port, self._proc.pid)
                return
            time.sleep(0.05)
        self.stop()
        raise ServiceError(
            f"mosquitto did not accept connections on port {self.port} within "
            f"{self.startup_timeout_s:.0f} s; log tail:\n{_log_tail(self.log_path)}"
        )

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate the broker (it saves its persistence file) and wait for it."""
        proc, self._proc = self._proc, None
        self._unregister_cleanup()
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout_s)
        log.info("private broker on port %d stopped", self.port)


def postgres_bindir() -> Path:
    """Where initdb/pg_ctl live: ``pg_config --bindir``, else the newest /usr/lib/postgresql/*/bin."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10)
            candidates.append(Path(out.stdout.strip()))
        except (OSError, subprocess.SubprocessError):
            pass

    def version_key(p: str) -> float:
        try:
            return float(Path(p).parent.name)
        except ValueError:
            return 0.0

    candidates.extend(Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key, reverse=True))
    for path in candidates:
        if (path / "initdb").exists() and (path / "pg_ctl").exists():
            return path
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    raise ServiceError("PostgreSQL server binaries (initdb, pg_ctl) not found; install the postgresql package")


class PrivatePostgres(_Service):
    """A PostgreSQL cluster in ``state_dir/pg`` on a private 127.0.0.1 port.

    Trust authentication on the loopback only, a small ``shared_buffers``,
    the unix socket in the state folder (so it never collides with a system
    cluster). An initialised cluster is re-used on the next start, which
    takes about a second instead of the several an ``initdb`` needs.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int | None = None,
        database: str = DEFAULT_DATABASE,
        startup_timeout_s: float = 60.0,
    ) -> None:
        self.data_dir: Path
        self.run_dir: Path
        self.log_path: Path
        self._set_base(Path(state_dir).resolve())
        self.database = database
        self._requested_port = port
        self.port = port or 0
        self.startup_timeout_s = startup_timeout_s
        self._started = False
        self._as_user: pwd.struct_passwd | None = None
        self._socket_dir: Path = self.run_dir
        self._temp_socket_dir: Path | None = None

    # -- public -----------------------------------------------------------

    @property
    def dsn(self) -> str:
        """libpq URL for the ``traffic`` database (superuser ``postgres``, trust auth)."""
        return self._url(self.database)

    @property
    def admin_dsn(self) -> str:
        """URL for the maintenance database ``postgres`` (create/drop databases from here)."""
        return self._url("postgres")

    @property
    def running(self) -> bool:
        return self._started

    @property
    def pid(self) -> int | None:
        """The postmaster's pid, read from ``postmaster.pid`` (None when not running)."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def start(self) -> None:
        """initdb if needed, start with pg_ctl, create the database; raise ServiceError on failure."""
        if self._started:
            return
        bindir = postgres_bindir()
        self._prepare_dirs()
        if self.initialised and self.pid is not None and _pid_alive(self.pid):
            log.warning("a postmaster from an earlier run is still up in %s; restarting it", self.data_dir)
            self._pg_ctl(bindir, "stop", "-m", "fast", "-w", check=False)
        self.port = self._requested_port or find_free_port()
        if not port_free(self.port):
            raise ServiceError(f"cannot start PostgreSQL: port {self.port} on {LOCALHOST} is already in use")
        if not self.initialised:
            self._initdb(bindir)
        self._write_conf()
        self._register_cleanup()
        self._started = True
        try:
            self._pg_ctl(bindir, "start", "-w", "-t", str(int(self.startup_timeout_s)), "-l", str(self.log_path))
            self._create_database()
        except BaseException:
            try:
                self.stop()
            except ServiceError:
                log.exception("cleanup after failed start")
            raise
        log.info("private PostgreSQL on %s:%d, data in %s", LOCALHOST, self.port, self.data_dir)

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` and wait; the cluster folder stays for the next run."""
        if not self._started:
            return
        self._started = False
        self._unregister_cleanup()
        try:
            if self.pid is not None:  # no postmaster.pid: it never came up, nothing to stop
                self._pg_ctl(postgres_bindir(), "stop", "-m", "fast", "-w", "-t", "60")
        finally:
            if self._temp_socket_dir is not None:
                shutil.rmtree(self._temp_socket_dir, ignore_errors=True)
                self._temp_socket_dir = None
        log.info("private PostgreSQL on port %d stopped", self.port)

    # -- private ----------------------------------------------------------

    def _url(self, database: str) -> str:
        if not self._started:
            raise ServiceError("private PostgreSQL is not running")
        return f"postgresql://{PG_SUPERUSER}@{LOCALHOST}:{self.port}/{database}"

    def _set_base(self, base: Path) -> None:
        self.data_dir = base / "pg"
        self.run_dir = base / "pg-run"
        self.log_path = self.run_dir / "server.log"

    def _prepare_dirs(self) -> None:
        user: pwd.struct_passwd | None = None
        if _is_root():
            user = _system_user("postgres")
            if user is None:
                raise ServiceError("running as root but there is no 'postgres' system user to run PostgreSQL as")
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            if not _reachable_by(self.data_dir, user):
                # e.g. a clone under /root (0700): keep the cluster in a reachable
                # folder that is stable per state dir, so restarts still re-use it
                digest = hashlib.sha1(str(self.data_dir.parent).encode()).hexdigest()[:12]
                fallback = Path(tempfile.gettempdir()) / f"traffic-pg-{digest}"
                fallback.mkdir(mode=0o755, exist_ok=True)
                if fallback.is_symlink() or fallback.stat().st_uid not in (0, user.pw_uid):
                    raise ServiceError(f"refusing to use {fallback}: it belongs to another user")
                log.warning(
                    "the 'postgres' user cannot reach %s; keeping the private cluster in %s instead",
                    self.data_dir.parent,
                    fallback,
                )
                self._set_base(fallback)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._socket_dir = self.run_dir
        if len(str(self.run_dir)) > _SOCKET_PATH_MAX - len("/.s.PGSQL.65535"):
            self._temp_socket_dir = Path(tempfile.mkdtemp(prefix="tpg-"))
            self._socket_dir = self._temp_socket_dir
        if user is not None:
            for path in (self.data_dir, self.run_dir, self._socket_dir):
                if not _reachable_by(path, user):
                    raise ServiceError(f"the 'postgres' user cannot reach {path}: "
                                       "an enclosing folder is not searchable")
                _hand_to(path, user)
            self._as_user = user
        else:
            self.data_dir.chmod(0o700)

    def _command(self, argv: list[str]) -> list[str]:
        if self._as_user is None:
            return argv
        runuser = shutil.which("runuser")
        if runuser:
            return [runuser, "-u", self._as_user.pw_name, "--", *argv]
        setpriv = shutil.which("setpriv")
        if setpriv:
            return [setpriv, f"--reuid={self._as_user.pw_uid}", f"--regid={self._as_user.pw_gid}", "--init-groups",
                    *argv]
        raise ServiceError("running as root but neither runuser nor setpriv is available to drop to 'postgres'")

    def _run(self, argv: list[str], what: str, *, check: bool = True, timeout_s: float = 120.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = env.get("LC_ALL", "C.UTF-8")
        try:
            result = subprocess.run(
                self._command(argv),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                env=env,
                cwd=self.run_dir,  # a folder the service user can enter
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServiceError(f"{what} failed: {exc}") from exc
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            raise ServiceError(
                f"{what} failed (exit {result.returncode}): {detail}\nserver log tail:\n{_log_tail(self.log_path)}"
            )

    def _initdb(self, bindir: Path) -> None:
        log.info("initialising a PostgreSQL cluster in %s", self.data_dir)
        self._run(
            [
                str(bindir / "initdb"),
                "-D", str(self.data_dir),
                "-U", PG_SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
                "--no-sync",  # a local demo/test cluster; saves seconds on the first run
            ],
            "initdb",
        )
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write("\n# app.services: per-run settings (port, socket) live here\n"
                       "include_if_exists = 'traffic.conf'\n")

    def _write_conf(self) -> None:
        text = "\n".join(
            [
                "# written by app.services.PrivatePostgres; rewritten on every start",
                f"port = {self.port}",
                f"listen_addresses = '{LOCALHOST}'",
                f"unix_socket_directories = '{self._socket_dir}'",
                "shared_buffers = '32MB'",
                "max_connections = 100",
                "fsync = on",
                "dynamic_shared_memory_type = posix",
                "",
            ]
        )
        path = self.data_dir / "traffic.conf"
        path.write_text(text)
        if self._as_user is not None:
            os.chown(path, self._as_user.pw_uid, self._as_user.pw_gid)

    def _pg_ctl(self, bindir: Path, *args: str, check: bool = True) -> None:
        self._run([str(bindir / "pg_ctl"), "-D", str(self.data_dir), *args], f"pg_ctl {args[0]}", check=check)

    def _create_database(self) -> None:
        from traffic import db  # local import: db pulls in psycopg, not needed for the broker

        try:
            db.create_database(self.admin_dsn, self.database)
        except StorageError as exc:
            raise ServiceError(f"cannot create database {self.database!r}: {exc}") from exc


@dataclass
class ServiceHandles:
    """What :func:`ensure_services` resolved: URLs to use plus the private services it started."""

    mqtt_url: str
    database_dsn: str
    broker: PrivateBroker | None = None
    postgres: PrivatePostgres | None = None
    _closed: bool = field(default=False, repr=False)

    def apply(self, settings: Settings) -> Settings:
        """``settings`` with the broker URL and DSN filled in (for handing to the services)."""
        return replace(
            settings,
            mqtt=replace(settings.mqtt, url=self.mqtt_url),
            database=replace(settings.database, dsn=self.database_dsn),
        )

    def close(self) -> None:
        """Stop what we started (broker first: it depends on nothing); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        errors: list[BaseException] = []
        for service in (self.broker, self.postgres):
            if service is None:
                continue
            try:
                service.stop()
            except ServiceError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> ServiceHandles:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.close()
        except ServiceError:
            if exc is None:
                raise
            log.exception("stopping services failed while handling another error")


def _install_sigterm_exit() -> None:
    """Turn SIGTERM into SystemExit so context managers and atexit hooks run.

    Only when we are the main thread and nobody installed a handler already.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def ensure_services(settings: Settings, *, state_dir: Path | None = None) -> ServiceHandles:
    """Use the configured broker/database, or start private ones in ``settings.state_dir``.

    The returned handles stop whatever was started on ``close()`` / context
    exit, and an atexit hook does the same if the caller forgets.
    """
    base = Path(state_dir or settings.state_dir).resolve()
    broker: PrivateBroker | None = None
    postgres: PrivatePostgres | None = None
    try:
        if settings.mqtt.url:
            mqtt_url = settings.mqtt.url
        else:
            broker = PrivateBroker(base)
            broker.start()
            mqtt_url = broker.url
        if settings.database.dsn:
            dsn = settings.database.dsn
        else:
            postgres = PrivatePostgres(base)
            postgres.start()
            dsn = postgres.dsn
    except BaseException:
        for service in (broker, postgres):
            if service is not None:
                try:
                    service.stop()
                except ServiceError:
                    log.exception("cleanup after failed start")
        raise
    if broker is not None or postgres is not None:
        _install_sigterm_exit()
    return ServiceHandles(mqtt_url=mqtt_url, database_dsn=dsn, broker=broker, postgres=postgres)

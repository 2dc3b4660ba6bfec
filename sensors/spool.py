"""A local, crash-safe spool for batches the database could not take.

When PostgreSQL is away the ingest service still acknowledges messages to
the broker (otherwise the broker's queue overflows and drops them), so the
batch must be durable somewhere else first: one file per batch, written to a
temporary name, fsynced, renamed into place and the directory fsynced. A
file either exists complete or not at all. Names sort in arrival order, and
replay goes in that order.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from sensors.records import Batch
from traffic.errors import StorageError

log = logging.getLogger(__name__)

SUFFIX = ".batch.json"
BAD_SUFFIX = ".bad"
_TMP_PREFIX = ".tmp-"


class Spool:
    """Ordered directory of pending batches. Thread-safe for one process."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create spool directory {self.directory}: {exc}") from exc
        self._lock = threading.Lock()
        self._last = 0
        self._pid = os.getpid()

    def _next_name(self) -> str:
        # Nanosecond clock, forced strictly increasing: files sort in append order.
        with self._lock:
            stamp = max(time.time_ns(), self._last + 1)
            self._last = stamp
        return f"{stamp:020d}-{self._pid}{SUFFIX}"

    def append(self, batch: Batch) -> Path:
        """Write ``batch`` durably; StorageError if the disk refuses (nothing half-written stays)."""
        name = self._next_name()
        final = self.directory / name
        tmp = self.directory / (_TMP_PREFIX + name)
        data = batch.to_json()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, final)
            self._fsync_dir()
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                log.warning("could not remove partial spool file %s", tmp)
            raise StorageError(f"cannot spool batch to {final}: {exc}") from exc
        return final

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def pending(self) -> list[Path]:
        """Spooled batches, oldest first."""
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX)
                          and not p.name.startswith(_TMP_PREFIX))
        except OSError as exc:
            raise StorageError(f"cannot list spool {self.directory}: {exc}") from exc

    def __len__(self) -> int:
        return len(self.pending())

    def load(self, path: Path) -> Batch:
        try:
            return Batch.from_json(path.read_bytes())
        except OSError as exc:
            raise StorageError(f"cannot read spool file {path}: {exc}") from exc

    def remove(self, path: Path) -> None:
        """Delete a replayed batch (after the database committed it)."""
        try:
            path.unlink(missing_ok=True)
            self._fsync_dir()
        except OSError as exc:
            raise StorageError(f"cannot remove spool file {path}: {exc}") from exc

    def quarantine(self, path: Path) -> Path:
        """Set aside a batch that can never be stored, keeping it for a human."""
        target = path.with_name(path.name + BAD_SUFFIX)
        try:
            os.replace(path, target)
        except OSError as exc:
            raise StorageError(f"cannot quarantine spool file {path}: {exc}") from exc
        log.error("spool batch %s cannot be stored; kept as %s", path.name, target.name)
        return target

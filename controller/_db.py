"""Small database helpers shared by the controller's storage modules."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from traffic.errors import StorageError


@contextmanager
def storage_errors(what: str) -> Iterator[None]:
    """Map psycopg errors raised inside the block to StorageError (original kept as ``__cause__``)."""
    try:
        yield
    except psycopg.Error as exc:
        raise StorageError(f"{what}: {exc}") from exc

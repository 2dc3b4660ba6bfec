"""One switch between libsumo and TraCI for runs with control in the loop.

libsumo runs SUMO inside the Python process (no socket round trip per
call) and is several times faster than TraCI for the same run, but it
allows only one simulation per process and is not always installed; TraCI
talks to a ``sumo`` child process over a socket and always works. Both
expose the same API, so controllers take the module returned here and never
import either directly.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

from traffic.errors import SimulationError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "libsumo", "traci")
#: Environment override of the ``auto`` choice (for example to force TraCI when debugging).
ENV_BACKEND = "TRAFFIC_SUMO_BACKEND"


def sumo_api(backend: str = "auto") -> ModuleType:
    """The SUMO control API module for ``backend`` (``auto`` = libsumo when importable, else traci)."""
    if backend not in BACKENDS:
        raise SimulationError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        backend = os.environ.get(ENV_BACKEND, "auto") or "auto"
        if backend not in BACKENDS:
            raise SimulationError(f"{ENV_BACKEND} must be one of {BACKENDS}, got {backend!r}")
    if backend in ("auto", "libsumo"):
        try:
            import libsumo
            return libsumo
        except ImportError as exc:
            if backend == "libsumo":
                raise SimulationError(f"libsumo is not installed: {exc}") from exc
            log.info("libsumo not available, falling back to TraCI")
    try:
        import traci
        return traci
    except ImportError as exc:
        raise SimulationError(f"neither libsumo nor traci is installed: {exc}") from exc


def api_name(api: ModuleType) -> str:
    """``libsumo`` or ``traci``: which backend a module returned by :func:`sumo_api` is."""
    return "libsumo" if api.__name__.startswith("libsumo") else "traci"

"""Where the SUMO executables are.

The PyPI ``eclipse-sumo`` wheel ships them under ``sumo.SUMO_HOME/bin`` and
puts launchers next to the interpreter; prefer those so the version always
matches the installed ``sumolib``/``libsumo`` (a Debian ``sumo`` on PATH
would be years older).
"""

from __future__ import annotations

import os
import shutil
import sys
from functools import cache
from pathlib import Path

from traffic.errors import SimulationError


@cache
def sumo_home() -> Path:
    """SUMO_HOME of the installed wheel (or the environment's)."""
    try:
        import sumo  # the eclipse-sumo wheel
        return Path(sumo.SUMO_HOME)
    except ImportError:
        env = os.environ.get("SUMO_HOME")
        if env:
            return Path(env)
    raise SimulationError("SUMO is not installed: pip install eclipse-sumo")


@cache
def sumo_binary(name: str = "sumo") -> str:
    """Absolute path of a SUMO executable (``sumo``, ``netconvert``, ``netgenerate`` ...)."""
    candidates = [sumo_home() / "bin" / name, Path(sys.executable).parent / name]
    for c in candidates:
        if c.exists() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    raise SimulationError(f"SUMO executable {name!r} not found (looked in {', '.join(map(str, candidates))})")


def sumo_tool(relative: str) -> Path:
    """Path of a script under ``$SUMO_HOME/tools``."""
    path = sumo_home() / "tools" / relative
    if not path.exists():
        raise SimulationError(f"SUMO tool {relative} not found under {sumo_home()}")
    return path

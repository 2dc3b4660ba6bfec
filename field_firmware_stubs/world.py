"""The field agent's adapter boundary: the ``World`` a controller's logic reads and drives.

A field agent (``traffic field run``) is one cabinet: it runs the
:class:`~field_firmware_stubs.emulator.FieldEmulator` (MQTT link, independent
plan check, conflict and clearance monitors, time-of-day fallback) against a
*world*: something with detectors to read, signal heads to drive and a clock.
Every step the agent does::

    readings = world.read_detectors()        # blocks until the world's next step
    state = emulator.tick(world.now(), readings)
    world.drive_signals(state)

Adapters:

* the SUMO twin (``app.twin``): one process owns the SUMO network and serves
  each controller's loops and heads to its agent over a local socket, in
  lock step, real time or accelerated (``--speed``);
* synthetic arrivals (``SyntheticAgentWorld`` in ``app.field_agent``): no
  SUMO, Poisson arrivals, for bench tests of a cabinet;
* a real controller: :class:`RealControllerWorld` below is the documented
  place for an NTCIP 1202 (SNMP) or vendor adapter. It is not implemented.

Contract (what every adapter must do):

* ``now()`` is seconds on the world's clock, strictly increasing between
  ``read_detectors`` calls; ``clock_origin`` is the wall-clock time of
  second 0 (messages are stamped ``clock_origin + now()``);
* ``read_detectors()`` returns ``{detector_id: DetectorReading}`` for the
  step just completed, or ``None`` when the world has ended (the agent then
  stops cleanly);
* ``drive_signals(state)`` puts the SUMO-style state string (one of
  ``G g y r`` per signal group, ``link_count`` long) on the heads. The
  conflict monitor has already judged it; an adapter must never change it
  except to a dark/flash state when it loses the agent;
* ``close()`` releases the world (idempotent).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol, runtime_checkable

from field_firmware_stubs.emulator import DetectorReading

__all__ = ["World", "RealControllerWorld"]


@runtime_checkable
class World(Protocol):
    """What a field agent needs from the world it controls (see the module docstring)."""

    clock_origin: datetime

    def now(self) -> float: ...

    def read_detectors(self) -> Mapping[str, DetectorReading] | None: ...

    def drive_signals(self, state: str) -> None: ...

    def close(self) -> None: ...


class RealControllerWorld:  # pragma: no cover - the documented boundary, not an implementation
    """Where an NTCIP 1202 or vendor adapter plugs in (not implemented).

    With a real cabinet the emulator's program becomes the *supervisor* of
    the controller rather than the controller itself. An adapter maps:

    * ``read_detectors``: NTCIP 1202 ``volumeOccupancyTable``
      (``detectorVolume``, ``detectorOccupancy``, per ``volumeOccupancyPeriod``)
      or the vendor's high-resolution log, into per-step ``DetectorReading``;
    * ``drive_signals``: either phase control (``phaseControlGroupHold`` /
      ``ForceOff`` / ``VehCall`` in the ``phaseControlGroupTable``), or, for
      controllers that only take patterns, a pattern download
      (``patternTable`` / ``splitTable``) with ``unitControl``/``systemPatternControl``
      selecting it at the cycle boundary, and a read back of
      ``phaseStatusGroupGreens``/``Yellows``/``Reds`` that the conflict
      monitor watches;
    * ``now``: the controller's clock (``globalTime``), checked against NTP.

    Keep the emulator's plan check and monitors in front of the adapter: the
    cabinet's own conflict monitor (MMU) stays the last line of defence.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError("no NTCIP 1202 / vendor adapter yet: see field_firmware_stubs/world.py "
                                  "and docs/operations.md (adapter boundary)")

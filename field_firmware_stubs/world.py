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
* a real controller: an NTCIP 1202 (SNMP) or vendor adapter implements
  :class:`World` (none ships yet; what it maps is below).

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

A real-controller adapter (NTCIP 1202 or vendor) maps, with the emulator's
program becoming the *supervisor* of the cabinet rather than the cabinet:

* ``read_detectors``: NTCIP 1202 ``volumeOccupancyTable``
  (``detectorVolume``, ``detectorOccupancy`` per ``volumeOccupancyPeriod``)
  or the vendor's high-resolution log, into per-step ``DetectorReading``;
* ``drive_signals``: phase control (``phaseControlGroupHold`` / ``ForceOff``
  / ``VehCall`` in ``phaseControlGroupTable``), or, for controllers that
  only take patterns, a pattern download (``patternTable`` / ``splitTable``)
  selected at the cycle boundary through ``unitControl`` /
  ``systemPatternControl``, with ``phaseStatusGroupGreens`` / ``Yellows`` /
  ``Reds`` read back for the conflict monitor;
* ``now``: the controller's clock (``globalTime``), checked against NTP.

The emulator's plan check and monitors stay in front of the adapter; the
cabinet's own conflict monitor (MMU) stays the last line of defence.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol, runtime_checkable

from field_firmware_stubs.emulator import DetectorReading

__all__ = ["World"]


@runtime_checkable
class World(Protocol):
    """What a field agent needs from the world it controls (see the module docstring)."""

    clock_origin: datetime

    def now(self) -> float: ...

    def read_detectors(self) -> Mapping[str, DetectorReading] | None: ...

    def drive_signals(self, state: str) -> None: ...

    def close(self) -> None: ...

"""Field-controller emulators: the edge of the closed loop.

Each :class:`FieldEmulator` behaves like one intersection controller: it runs
a signal program (:mod:`.program`), watches its own outputs with a conflict
monitor (:mod:`.conflict_monitor`), re-checks every plan it is sent with an
independent implementation of the safety rules (:mod:`.plan_check`), talks
MQTT (:mod:`.link`), and falls back to its local time-of-day plan. Worlds
drive emulators: :class:`SumoWorld` (SUMO via libsumo/TraCI) or
:class:`SyntheticWorld` (Poisson arrivals, for load tests). The package name
is historical; these are working emulators, not stubs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["FieldEmulator", "FieldGateway", "DetectorReading", "SignalProgram", "ConflictMonitor",
           "check_plan", "SumoWorld", "SyntheticWorld"]

_LAZY = {
    "FieldEmulator": "field_firmware_stubs.emulator",
    "DetectorReading": "field_firmware_stubs.emulator",
    "FieldGateway": "field_firmware_stubs.link",
    "SignalProgram": "field_firmware_stubs.program",
    "ConflictMonitor": "field_firmware_stubs.conflict_monitor",
    "check_plan": "field_firmware_stubs.plan_check",
    "SumoWorld": "field_firmware_stubs.world_sumo",
    "SyntheticWorld": "field_firmware_stubs.world_synthetic",
}


def __getattr__(name: str) -> Any:
    """Import submodules on first use so ``import field_firmware_stubs`` never loads SUMO or paho."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'field_firmware_stubs' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


if TYPE_CHECKING:  # pragma: no cover
    from field_firmware_stubs.conflict_monitor import ConflictMonitor
    from field_firmware_stubs.emulator import DetectorReading, FieldEmulator
    from field_firmware_stubs.link import FieldGateway
    from field_firmware_stubs.plan_check import check_plan
    from field_firmware_stubs.program import SignalProgram
    from field_firmware_stubs.world_sumo import SumoWorld
    from field_firmware_stubs.world_synthetic import SyntheticWorld

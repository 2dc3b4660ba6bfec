"""A world without SUMO: Poisson vehicle arrivals at every detector, for load tests.

Arrivals are independent of the signals (think of loops far enough upstream
that queues never reach them), so what this world exercises is the
controllers, the MQTT path and the ingest behind it, not traffic realism.
One numpy draw per step covers every detector of every emulator, so a
process can drive hundreds of controllers faster than real time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from field_firmware_stubs.emulator import DetectorReading, FieldEmulator
from traffic.errors import SimulationError

__all__ = ["SyntheticWorld"]


class SyntheticWorld:
    """Drives ``emulators`` with Poisson arrivals.

    ``rates_vph`` is one rate for every detector or a mapping
    ``(controller_id, detector_id) -> vehicles per hour`` (missing pairs get
    ``default_vph``). Each vehicle occupies its loop for
    ``occupancy_s_per_vehicle`` seconds; a share ``motorcycle_share`` of
    vehicles are motorcycles.
    """

    def __init__(self, emulators: Sequence[FieldEmulator], *, seed: int,
                 rates_vph: float | Mapping[tuple[str, str], float] = 400.0, default_vph: float = 400.0,
                 motorcycle_share: float = 0.85, occupancy_s_per_vehicle: float = 0.35,
                 begin: float = 0.0, step_s: float = 1.0) -> None:
        if step_s <= 0:
            raise SimulationError(f"step_s must be positive, got {step_s}")
        if not 0.0 <= motorcycle_share <= 1.0:
            raise SimulationError(f"motorcycle_share must be 0..1, got {motorcycle_share}")
        self.emulators = list(emulators)
        self.step_s = step_s
        self._now = float(begin)
        self._rng = np.random.default_rng(seed)
        self._share = motorcycle_share
        self._occ_per_vehicle = occupancy_s_per_vehicle
        self._slots: list[tuple[FieldEmulator, list[tuple[int, str]]]] = []
        rates: list[float] = []
        for emulator in self.emulators:
            slots = []
            for det in emulator.spec.detectors:
                if isinstance(rates_vph, Mapping):
                    vph = float(rates_vph.get((emulator.controller_id, det.detector_id), default_vph))
                else:
                    vph = float(rates_vph)
                if vph < 0:
                    raise SimulationError(f"negative rate for {emulator.controller_id}/{det.detector_id}")
                slots.append((len(rates), det.detector_id))
                rates.append(vph)
            self._slots.append((emulator, slots))
        self._lam = np.asarray(rates, dtype=float) * step_s / 3600.0
        self.states: dict[str, str] = {}
        self.vehicles = 0
        for emulator in self.emulators:  # show the first state before any arrivals
            self.states[emulator.controller_id] = emulator.tick(self._now, {})

    @property
    def time(self) -> float:
        return self._now

    def step(self) -> dict[str, str]:
        """Advance one step; return the state each controller drives (by controller id)."""
        self._now = round(self._now + self.step_s, 6)
        counts = self._rng.poisson(self._lam)
        motorcycles = self._rng.binomial(counts, self._share)
        occupancy = np.minimum(100.0, counts * (self._occ_per_vehicle / self.step_s * 100.0))
        self.vehicles += int(counts.sum())
        empty = DetectorReading(0, 0.0, False, 0)
        for emulator, slots in self._slots:
            readings = {}
            for index, det in slots:
                n = int(counts[index])
                readings[det] = empty if n == 0 else DetectorReading(n, float(occupancy[index]), True,
                                                                       int(motorcycles[index]))
            self.states[emulator.controller_id] = emulator.tick(self._now, readings)
        return self.states

    def run_until(self, t: float) -> None:
        while self._now < t - 1e-9:
            self.step()

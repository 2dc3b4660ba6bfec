"""The centre sizes plans on at least ``demand_window_min_s`` of counts, however often it re-plans.

Re-planning every 60 s on the last 60 s of counts gridlocked cologne3 on one
seed in three (bench/cadence.py: 752.8 s against 22.9 s at 600 s); with the
five-minute floor the same cadence gave 24.7 s.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from controller.examples import uniform_corridor
from controller.inprocess import InProcessBus, InProcessCounts, InProcessSender, MemoryLedger
from controller.service import CentralService
from traffic.config import ControlSettings, Settings
from traffic.errors import ConfigError

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class SpyCounts(InProcessCounts):
    """The in-process counts reader, remembering every window it was asked for."""

    def __init__(self, bus: InProcessBus) -> None:
        super().__init__(bus)
        self.windows: list[tuple[datetime, datetime]] = []

    def totals(self, controller_ids, start, end):
        self.windows.append((start, end))
        return super().totals(controller_ids, start, end)


def _window(epoch_s: int, floor_s: int) -> timedelta:
    settings = Settings(control=ControlSettings(demand_window_min_s=floor_s))
    bus = InProcessBus("t")
    counts = SpyCounts(bus)
    central = CentralService(settings, uniform_corridor(2), counts=counts, sender=InProcessSender(bus, lambda: NOW),
                             ledger=MemoryLedger(lambda: NOW), gate=None, apply_timeout_s=0.0)
    central.run_epoch(NOW, epoch_s)
    (start, end), = counts.windows
    assert end == NOW
    return end - start


@pytest.mark.parametrize(("epoch_s", "floor_s", "expected_s"), [
    (60, 300, 300),    # a short cadence still reads five minutes of counts
    (600, 300, 600),   # a long epoch reads its own length
    (60, 0, 60),       # floor off: the epoch alone
    (120, 900, 900)])
def test_demand_window_is_the_epoch_or_the_floor_whichever_is_longer(epoch_s, floor_s, expected_s):
    assert _window(epoch_s, floor_s) == timedelta(seconds=expected_s)


def test_a_negative_floor_is_refused():
    with pytest.raises(ConfigError, match="demand_window_min_s"):
        replace(Settings(), control=ControlSettings(demand_window_min_s=-1))

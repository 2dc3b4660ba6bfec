"""Approach sensor zones, and how much a vehicle seen past a split in the road counts.

An approach sensor watches each lane feeding a signal and the road before
it (:meth:`field_firmware_stubs.world_sumo.SumoWorld._bind_approach_zones`).
Where SUMO splits that road at a junction a few metres before the stop
line (a side street leaves, a lane fans out), the queue soon stands beyond
the split, and a zone that stops there sees only its first vehicles: the
schedule starved such approaches, so until session 12 their signals kept
their loops (all of braunschweig, two of cologne3's three signals).

The zones of such a signal now go on past the first split, and a vehicle
seen there counts as the share of the vehicles leaving that lane that
entered this approach: the sensor tracks vehicles across its field of
view, so it counts turning movements the way a video detector does
(:class:`TurnCounts`). One exception (:func:`weight_past_split`): when the
approach's own queue reaches back to the split, a vehicle standing behind
it waits for this green whatever its turn (a lane is first in, first out),
so it counts in full. A split closer to the stop line than
``MIN_BEFORE_SPLIT_M`` is not followed.

Pure: no SUMO here, the world feeds it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

__all__ = ["Zone", "TurnCounts", "weight_past_split", "MIN_BEFORE_SPLIT_M", "SPILL_MARGIN_M", "STANDING_MPS"]

#: the zones go past a split only when the road before it holds at least this much of the queue (m): two
#: or three vehicles. Past splits 10-13 m before the stop line (cologne3's joined cluster) the queue is
#: almost all beyond the split, and weighing it by shares gridlocked cologne3 on one seed (agency
#: clearance, seed 2: 69.9 s and 24 vehicles undeparted against 19.3 with its loops); such a signal keeps
#: its loops
MIN_BEFORE_SPLIT_M = 15.0

#: the approach's queue "reaches the split" when its last standing vehicle is this close to it (m)
SPILL_MARGIN_M = 10.0
#: slower than this a vehicle stands (m/s), as the schedule's queued speed
STANDING_MPS = 1.0


class Zone(NamedTuple):
    """One lane an approach sensor watches."""

    watched: str               # SUMO lane id
    approach: str              # the approach lane at the stop line its vehicles count on
    links: frozenset[int]      # signal groups that approach lane feeds
    offset_m: float            # from the watched lane's end to the stop line
    split: str | None = None   # the lane before the split junction this zone lies past (None: before any)


class TurnCounts:
    """Of the vehicles that left a split's lane, how many entered each approach lane after it.

    The share starts at one half (one vehicle each way assumed, Laplace's
    rule) and follows the counts; it never reaches 0 or 1, so a turn never
    seen is not ruled out.
    """

    def __init__(self) -> None:
        self._entered: dict[tuple[str, str], int] = {}
        self._left: dict[str, int] = {}

    def record(self, split: str, entered: Iterable[str]) -> None:
        """One vehicle left ``split``'s lane and now runs on the approach lanes ``entered`` (often none)."""
        self._left[split] = self._left.get(split, 0) + 1
        for approach in set(entered):
            self._entered[(split, approach)] = self._entered.get((split, approach), 0) + 1

    def share(self, split: str, approach: str) -> float:
        """Estimated share of the vehicles leaving ``split``'s lane that enter ``approach``."""
        return (self._entered.get((split, approach), 0) + 1.0) / (self._left.get(split, 0) + 2.0)


def weight_past_split(share: float, speed_mps: float, queue_tail_m: float, split_at_m: float) -> float:
    """How much a vehicle seen past a split counts on an approach.

    ``share``: :meth:`TurnCounts.share`; ``queue_tail_m``: the distance to
    the stop line of the approach's last standing vehicle before the split
    (0: none stands); ``split_at_m``: the split's distance to the stop line.
    A standing vehicle counts in full once that queue reaches the split.
    """
    if speed_mps < STANDING_MPS and queue_tail_m >= split_at_m - SPILL_MARGIN_M:
        return 1.0
    return share

"""Hand-written SUMO tripinfo rows for the KPI tests (one format, shared by every test that needs it)."""

from __future__ import annotations

from pathlib import Path


def trip(vid: str, *, depart: float, depart_delay: float, time_loss: float, arrival: float, duration: float,
         waiting: float = 0.0, stops: int = 0) -> str:
    """A vehicle that entered (and arrived, unless ``arrival`` is -1)."""
    return (f'<tripinfo id="{vid}" depart="{depart:.2f}" departDelay="{depart_delay:.2f}" arrival="{arrival:.2f}" '
            f'duration="{duration:.2f}" waitingTime="{waiting:.2f}" waitingCount="{stops}" timeLoss="{time_loss:.2f}" '
            f'vType="moto"/>')


def undeparted(vid: str, depart_delay: float) -> str:
    """A vehicle still waiting to enter at the end (``write-undeparted``), ``depart_delay`` s after its schedule."""
    return (f'<tripinfo id="{vid}" depart="-1" departDelay="{depart_delay:.2f}" arrival="-1.00" duration="0.00" '
            f'waitingTime="0.00" waitingCount="0" timeLoss="0.00" vType="car" vaporized="end"/>')


def write_tripinfo(path: Path, rows: list[str]) -> Path:
    path.write_text('<?xml version="1.0"?>\n<tripinfos>\n' + "\n".join(rows) + "\n</tripinfos>\n")
    return path

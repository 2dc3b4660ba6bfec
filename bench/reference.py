"""Reference numbers for the shared benchmark scenarios (their README, SUMO 1.28, seed 42).

Mean delay per vehicle in s (RESCO definition) for the city's fixed-time
plans ("static"), SUMO's actuated control on the same phases, and the
README's max-pressure (every 10 s the phase with the largest
incoming-minus-outgoing queue, 3 s yellow, no all-red, no min/max green).
Kept in one place so every benchmark compares against the same values.
"""

from __future__ import annotations

#: scenario -> (static, actuated, max-pressure), mean delay s, seed 42
README_REFERENCE: dict[str, tuple[float, float, float]] = {
    "cologne1": (41.9, 77.7, 23.4),
    "cologne3": (35.7, 36.4, 22.1),
    "ingolstadt1": (29.9, 19.9, 15.2),
    "grid4x4": (91.3, 69.1, 50.2),
}

"""Indiana hi-resolution event codes the emulators emit.

Codes follow the Indiana Traffic Signal Hi Resolution Data Logger
Enumerations so ATSPM-style measures computed from SUMO runs and from real
cabinets come out of the same SQL. Parameters: phase number for phase and
pedestrian events, detector channel (1-based position in
``IntersectionSpec.detectors``) for detector events; pedestrian push buttons
are numbered by the phase they call, so code 90 carries the phase too.
A timed pedestrian recall (a walk shown without anyone pressing) logs no
call: only 21-23 for the walk it shows.

:data:`CONTROL_SOURCE` is *not* an Indiana code: it records why the controller
changed who is in charge (centre, local time-of-day fallback) in a range the
enumerations leave to vendors, so nothing in the standard set is overloaded.
"""

from __future__ import annotations

from typing import NamedTuple

PHASE_BEGIN_GREEN = 1
PHASE_GAP_OUT = 4
PHASE_MAX_OUT = 5
PHASE_FORCE_OFF = 6
PHASE_END_GREEN = 7
PHASE_BEGIN_YELLOW = 8
PHASE_END_YELLOW = 9
PHASE_BEGIN_RED_CLEAR = 10
PHASE_END_RED_CLEAR = 11
PED_BEGIN_WALK = 21
PED_BEGIN_CLEAR = 22
PED_BEGIN_DONT_WALK = 23
PED_CALL_REGISTERED = 45         # a push-button call latched for the phase (param: phase)
PED_DETECTOR_ON = 90             # a push-button press (param: ped detector channel = the phase number)
DETECTOR_OFF = 81
DETECTOR_ON = 82
COORD_PATTERN_CHANGE = 131
CYCLE_LENGTH_CHANGE = 132
OFFSET_LENGTH_CHANGE = 133
SPLIT_CHANGE_BASE = 134          # 134 + (phase - 1) for phases 1..16
COORD_CYCLE_STATE = 150
FLASH_STATUS = 173
CONTROL_SOURCE = 200             # project-specific (vendor range), see module docstring

# COORD_CYCLE_STATE parameters
COORD_FREE = 0
COORD_IN_STEP = 1
COORD_TRANSITION_ADD = 2
COORD_TRANSITION_SUBTRACT = 3

# FLASH_STATUS parameters
FLASH_OFF = 0
FLASH_CONFLICT_MONITOR = 4       # flash forced by the conflict (malfunction) monitor

# CONTROL_SOURCE parameters
SOURCE_CENTRAL = 0
SOURCE_TOD_SILENCE = 1           # centre silent longer than central_silence_timeout_s
SOURCE_TOD_LINK_DOWN = 2         # MQTT link lost
SOURCE_TOD_REJECTED = 3          # centre sent garbage while in charge


class HiResEvent(NamedTuple):
    """One event: simulation time (s, 0.1 s resolution), Indiana code, parameter."""

    time: float
    code: int
    param: int

"""Safety rule identifiers: the contract between the centre and the field.

``controller.safety`` and ``field_firmware_stubs.plan_check`` implement the
rules separately on purpose (one bug must not let an unsafe plan through
both), but a rejection must name the same rule on both sides, in results,
logs and the plan store, so the identifiers live here once.
"""

from __future__ import annotations

IDENTITY = "IDENTITY"        # plan addressed to another controller
PHASES = "PHASES"            # phase numbers, signal letters, finite non-negative times
CYCLE_SUM = "CYCLE_SUM"      # patternCycleTime = sum of splitTime
CYCLE_RANGE = "CYCLE_RANGE"  # 0 < cycle <= the intersection's maximum
OFFSET = "OFFSET"            # 0 <= offset < cycle
COORD_PHASE = "COORD_PHASE"  # splitCoordPhase is a phase of the plan
MIN_GREEN = "MIN_GREEN"      # green >= phaseMinimumGreen >= design minimum
MAX_GREEN = "MAX_GREEN"      # phaseMaximum1 >= phaseMinimumGreen
YELLOW = "YELLOW"            # ITE yellow change, at most 6 s
RED_CLEAR = "RED_CLEAR"      # ITE red clearance
PED_WALK = "PED_WALK"        # walk >= 7 s where pedestrians cross
PED_CLEAR = "PED_CLEAR"      # pedestrian clearance and green >= walk + clearance
CONFLICT = "CONFLICT"        # conflict matrix; foes never both protected
SERVES_ALL = "SERVES_ALL"    # every designed movement served by some phase

RULES = (IDENTITY, PHASES, CYCLE_SUM, CYCLE_RANGE, OFFSET, COORD_PHASE, MIN_GREEN, MAX_GREEN,
         YELLOW, RED_CLEAR, PED_WALK, PED_CLEAR, CONFLICT, SERVES_ALL)

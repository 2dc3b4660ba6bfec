#!/usr/bin/env bash
# The project's test command (see README): bash scripts/test.sh [pytest args...]
#
# Creates/updates .venv, then runs pytest and returns its exit code, except that
# "no tests collected" (pytest exit code 5) counts as a failure: a typo in a
# test path or marker must not turn CI green.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
traffic_venv

status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests; treating that as a failure" >&2
    exit 1
fi
exit "$status"

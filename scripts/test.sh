#!/usr/bin/env bash
# The project's test command (see README): bash scripts/test.sh [pytest args...]
#
# Creates/updates .venv, then runs pytest and returns its exit code, except that
# "no tests collected" (pytest exit code 5) counts as a failure: a typo in a
# test path or marker must not turn CI green.
#
# Lint first (scripts/lint.sh: ruff + mypy) when CI is set (CI=true, as
# .ci/run sets it) or TRAFFIC_LINT=1; a lint failure stops the run before
# pytest. TRAFFIC_SKIP_LINT=1 skips it even under CI. Without CI a developer's
# `bash scripts/test.sh ...` runs pytest alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
traffic_venv

ci="${CI:-}"
case "${ci,,}" in ""|0|false|no) ci="" ;; esac
if [ "${TRAFFIC_SKIP_LINT:-0}" != 1 ] && { [ -n "$ci" ] || [ "${TRAFFIC_LINT:-0}" = 1 ]; }; then
    if ! bash scripts/lint.sh; then
        echo "error: ruff/mypy failed (scripts/lint.sh); not running the tests" >&2
        exit 1
    fi
fi

status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "error: pytest collected no tests; treating that as a failure" >&2
    exit 1
fi
exit "$status"

#!/usr/bin/env bash
# Lint and type checks (issue #13): ruff over the code and the tests, mypy
# (strict) over traffic/ and controller/. Configuration: pyproject.toml
# ([tool.ruff], [tool.mypy]). Exit code non-zero when either finds something.
#
#   bash scripts/lint.sh          # uses .venv (run scripts/test.sh once to create it)
#
# scripts/test.sh runs this before pytest under CI (CI=true) or with
# TRAFFIC_LINT=1; TRAFFIC_SKIP_LINT=1 skips it.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

LINT_PATHS=(app traffic controller sensors simulation dashboards field_firmware_stubs bench tests)
failed=()

echo "== ruff check ${LINT_PATHS[*]}" >&2
.venv/bin/python -m ruff check --output-format=concise "${LINT_PATHS[@]}" || failed+=("ruff")

echo "== mypy (strict: traffic/ controller/)" >&2
.venv/bin/python -m mypy || failed+=("mypy")

if [ "${#failed[@]}" -gt 0 ]; then
    echo "error: lint failed: ${failed[*]} (see above; fix, or run 'ruff check --fix' for the safe rewrites)" >&2
    exit 1
fi
echo "lint: ruff and mypy clean" >&2

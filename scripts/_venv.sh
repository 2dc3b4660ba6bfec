# shellcheck shell=bash
# Sourced by scripts/test.sh and scripts/demo.sh: create or update .venv.
#
# Why a stamp file: `pip install -e .` rebuilds the editable wheel every time
# (tens of seconds); re-install only when pyproject.toml is newer than the last
# install, or when TRAFFIC_FORCE_INSTALL=1.

traffic_pick_python() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; return; fi
    for candidate in python3.11 python3.12 python3.13 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"; return
        fi
    done
    echo "error: Python >= 3.11 not found (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

traffic_venv() {
    local python stamp
    python=$(traffic_pick_python)
    if [ ! -x .venv/bin/python ]; then
        echo "creating .venv with $python" >&2
        "$python" -m venv .venv
    fi
    stamp=.venv/.traffic-install-stamp
    if [ "${TRAFFIC_FORCE_INSTALL:-0}" = 1 ] || [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        echo "installing the project into .venv (pip install -e '.[test]')" >&2
        .venv/bin/python -m pip install --quiet -e '.[test]'
        touch "$stamp"
    fi
}

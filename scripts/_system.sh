# shellcheck shell=bash
# Sourced by scripts/demo.sh: install the Debian packages the demo's private
# services need (the demo starts its own broker and cluster, so nothing has to
# be running; only the binaries must exist). apt-get runs only when something
# is missing.

traffic_system_packages() {
    local packages=()
    command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || packages+=(mosquitto)
    if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v pg_config >/dev/null 2>&1; then
        packages+=(postgresql postgresql-client)
    fi
    if [ ! -x .venv/bin/python ] && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
        packages+=(python3-venv)
    fi
    if [ "${#packages[@]}" -eq 0 ]; then
        return 0
    fi
    echo "installing Debian packages: ${packages[*]}" >&2
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "error: need root or sudo to install ${packages[*]}" >&2; return 1; }
        sudo="sudo"
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${packages[@]}"
}

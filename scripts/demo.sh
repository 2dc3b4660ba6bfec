#!/usr/bin/env bash
# Run the demo: bash scripts/demo.sh [traffic demo args...]
#
# Same environment set-up as scripts/test.sh, then the `traffic demo` command.
# With no broker/database configured (TRAFFIC_MQTT_URL, TRAFFIC_DATABASE_DSN),
# the demo starts private ones under the state folder (app.services).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/_venv.sh
source scripts/_venv.sh
# shellcheck source=scripts/_system.sh
source scripts/_system.sh
traffic_system_packages
traffic_venv
exec .venv/bin/traffic demo "$@"

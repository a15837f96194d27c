#!/usr/bin/env bash
# Start sipbridge on loopback, place a real SIPp call at it and print the
# result. Extra arguments go to `sipbridge demo`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
exec .venv/bin/sipbridge demo "$@"

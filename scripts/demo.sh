#!/usr/bin/env bash
# The main job, end to end on loopback: install what is missing, start the
# gateway with the built-in model, and have a caller (baresip) ask the agent
# for a person; the agent transfers the call to the human's phone (baresip).
# Prints each step, the transfer's outcome, the trace and the dashboard's
# address; exits 0 only if the call went through. Extra arguments go to
# `sipbridge demo` (--stay keeps the dashboard up, --transfer-to URI).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
exec .venv/bin/sipbridge demo "$@"

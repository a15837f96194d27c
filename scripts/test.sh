#!/usr/bin/env bash
# Run sipbridge's test suite (unit and integration) in the project's .venv.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m integration -x`.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
# Lint and types first: a ruff or mypy error fails the run before the suite starts.
.venv/bin/ruff check src tests bench
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"

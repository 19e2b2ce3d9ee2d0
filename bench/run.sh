#!/usr/bin/env bash
# flare side by side with uWSGI: installs uWSGI from PyPI (pyuwsgi 2.0.30)
# in a virtual environment, then runs the release benchmark harness.
#
#   bash bench/run.sh [--quick] [--rounds N] [--only SCENARIO[,SCENARIO...]]
#
# FLARE_UWSGI=/path/to/uwsgi   use this uwsgi binary; no venv, no install
# FLARE_UWSGI_VENV=DIR         the venv to create or reuse (default target/uwsgi-venv)
#
# Prints the table; writes target/bench/results.json. See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."

want=2.0.30
if [ -z "${FLARE_UWSGI:-}" ]; then
  venv="${FLARE_UWSGI_VENV:-target/uwsgi-venv}"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  have="$("$venv/bin/uwsgi" --version 2>/dev/null || true)"
  if [ "$have" != "$want" ]; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check "pyuwsgi==$want"
  fi
  FLARE_UWSGI="$(cd "$venv/bin" && pwd)/uwsgi"
fi
if [ ! -x "$FLARE_UWSGI" ]; then
  echo "bench/run.sh: FLARE_UWSGI=$FLARE_UWSGI is not an executable uwsgi" >&2
  exit 2
fi
export FLARE_UWSGI

exec cargo run --release --quiet -p flare-bench -- "$@"

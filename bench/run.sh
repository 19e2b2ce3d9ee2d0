#!/usr/bin/env bash
# flare side by side with uWSGI: installs uWSGI from PyPI (pyuwsgi 2.0.30)
# in a virtual environment, builds flare's Python package into another (for
# the Python-handler side), then runs the release benchmark harness.
#
#   bash bench/run.sh [--quick] [--rounds N] [--only SCENARIO[,SCENARIO...]]
#                     [--no-python] [--busy-poll-us N]
#
# FLARE_UWSGI=/path/to/uwsgi   use this uwsgi binary; no venv, no install
# FLARE_UWSGI_VENV=DIR         the venv to create or reuse (default target/uwsgi-venv)
# FLARE_PYTHON=/path/to/python a Python with flare's package installed; no build
# FLARE_PY_VENV=DIR            the venv for flare's package (default target/py-venv)
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

if [ -z "${FLARE_PYTHON:-}" ] && [[ " $* " != *" --no-python "* ]]; then
  pyvenv="${FLARE_PY_VENV:-target/py-venv}"
  if [ ! -x "$pyvenv/bin/python" ]; then
    python3 -m venv "$pyvenv"
  fi
  # Always from this checkout, so the Python side runs the current code.
  "$pyvenv/bin/pip" install --quiet --disable-pip-version-check ./crates/flare-py
  FLARE_PYTHON="$(cd "$pyvenv/bin" && pwd)/python"
  export FLARE_PYTHON
fi

exec cargo run --release --quiet -p flare-bench -- "$@"

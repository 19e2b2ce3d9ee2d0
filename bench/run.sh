#!/usr/bin/env bash
# flare side by side with uWSGI: installs uWSGI from PyPI (pyuwsgi 2.0.30)
# in a virtual environment, builds flare's Python package into another (for
# the Python-handler side), then runs the release benchmark harness.
#
#   bash bench/run.sh [--quick] [--rounds N] [--only SCENARIO[,SCENARIO...]]
#                     [--no-python] [--busy-poll-us N] [--no-spool]
#
# Then the spooler side by side (bench/spool.sh: the same Python script
# under flare, with and without fsync, and under uWSGI; 1 and 4 spoolers):
# 2000 jobs and 20 one-at-a-time pings, or 300 and 5 with --quick; it fails
# when either side lost a job. Not run with --no-spool, --no-python or
# --only; flare's sides only with --flare-only.
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

spool=1
quick=0
args=()
for a in "$@"; do
  case "$a" in
    --no-spool) spool=0; continue ;;
    --no-python | --only | --only=*) spool=0 ;;
    --quick) quick=1 ;;
    --flare-only) export FLARE_SPOOL_SIDES="flare flare-nofsync" ;;
  esac
  args+=("$a")
done

status=0
# FLARE_BENCH_PROFILE=dev (with --quick, after cargo test): the test build's profile,
# whose dependencies `cargo test` has already compiled (optimised: the
# workspace's dev profile is), instead of a release build from scratch.
# Quick mode checks counts, not figures; figures come from release builds.
cargo run --profile "${FLARE_BENCH_PROFILE:-release}" --quiet -p flare-bench --bin flare-bench -- "${args[@]}" || status=$?

if [ "$spool" = 1 ]; then
  echo
  echo "spooler (bench/spool.sh; Python handlers on both sides; spool directories under target/bench/spool):"
  if [ "$quick" = 1 ]; then
    bash bench/spool.sh 300 5 || status=$?
  else
    bash bench/spool.sh 2000 20 || status=$?
  fi
fi
exit "$status"

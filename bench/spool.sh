#!/usr/bin/env bash
# The spooler side by side: bench/uwsgi/spoolbench.py under uWSGI
# (pyuwsgi 2.0.30, --spooler-frequency 1, its minimum) and under flare's
# Python package (fsync on, the default, and --spooler-no-fsync, which is
# what uWSGI does), with 1 and 4 spooler processes on one spool directory.
#
#   bash bench/spool.sh [N_JOBS] [PINGS]     (default 2000 20)
#
# FLARE_UWSGI / FLARE_PYTHON as for bench/run.sh (default: the venvs under
# target/). Spool directories live under target/bench/spool (the disk, as a
# user's would), or FLARE_SPOOL_ROOT (e.g. /dev/shm/flare-spool for tmpfs).
# FLARE_SPOOL_SIDES (default "flare flare-nofsync uwsgi") and
# FLARE_SPOOL_PROCS (default "1 4") pick the runs. Prints one table; exits
# 1 when a run gave no result or lost a job (a job or ping spooled that
# never ran). See docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-2000}"
pings="${2:-20}"
uwsgi="${FLARE_UWSGI:-target/uwsgi-venv/bin/uwsgi}"
python="${FLARE_PYTHON:-target/py-venv/bin/python}"
sides="${FLARE_SPOOL_SIDES:-flare flare-nofsync uwsgi}"
if [ ! -x "$python" ] || { [[ " $sides " == *" uwsgi "* ]] && [ ! -x "$uwsgi" ]; }; then
  echo "bench/spool.sh: needs flare's Python ($python) and uWSGI ($uwsgi); run bash bench/run.sh once, or set FLARE_PYTHON / FLARE_UWSGI" >&2
  exit 2
fi
python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")"
apps="$PWD/bench/uwsgi"
root="${FLARE_SPOOL_ROOT:-$PWD/target/bench/spool}"

run() { # side spoolers
  local side=$1 procs=$2 dir="$root/$1-$2"
  rm -rf "$dir"; mkdir -p "$dir/spool" "$dir/out"
  local pid
  if [ "$side" = uwsgi ]; then
    BENCH_N=$n BENCH_PINGS=$pings BENCH_OUT="$dir/out" "$uwsgi" --master --die-on-term \
      --socket "$dir/uwsgi.sock" --pythonpath "$apps" --module spoolbench \
      --spooler "$dir/spool" --spooler-processes "$procs" --spooler-frequency 1 \
      --mule="$apps/spoolmule.py" --processes 1 >"$dir/log" 2>&1 &
  else
    local extra=""
    [ "$side" = flare-nofsync ] && extra="--spooler-no-fsync"
    (cd "$apps" && BENCH_N=$n BENCH_PINGS=$pings BENCH_OUT="$dir/out" PYTHONPATH="$apps" \
      exec "$python" -m flare --workers 1 --mules 1 --mule-entry spoolbench:mule_main \
      --spooler "$dir/spool" --spooler-processes "$procs" $extra spoolbench >"$dir/log" 2>&1) &
  fi
  pid=$!
  for _ in $(seq 1 6000); do
    [ -f "$dir/out/result.json" ] && break
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ ! -f "$dir/out/result.json" ]; then
    echo "$side with $procs spoolers: no result; log:" >&2
    tail -n 20 "$dir/log" >&2
    return 1
  fi
  "$python" - "$side" "$procs" "$dir/out/result.json" <<'PY'
import json, sys
side, procs, path = sys.argv[1:]
r = json.load(open(path))
label = {"flare": "flare, fsync (default)", "flare-nofsync": "flare --spooler-no-fsync",
         "uwsgi": "uWSGI 2.0.30 (no fsync)"}[side]
lost = r["lost"] + r["pings_lost"]
print(f"| {label} | {procs} | {r['jobs']} | {r['enqueue_per_s']:,.0f} | {r['complete_per_s']:,.0f} | "
      f"{r['start_p50_ms']:.2f} | {r['start_p99_ms']:.2f} | {lost} | {r['ran_twice']} |")
sys.exit(1 if lost else 0)
PY
}

echo "| side | spoolers | jobs | enqueued/s | completed/s | spool-to-start p50 ms | p99 ms | lost | ran twice |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
failed=0
for procs in ${FLARE_SPOOL_PROCS:-1 4}; do
  for side in $sides; do
    run "$side" "$procs" || failed=1
  done
done
exit "$failed"

#!/usr/bin/env bash
# Mule messages per second, flare vs uWSGI 2.0.30, the same script
# (bench/uwsgi/mulemsg_app.py: worker 1 sends, mule 1 reads with
# uwsgidecorators' @mulemsg). Uses the venvs of bench/run.sh.
#
#   bash bench/mulemsg.sh [N] [SIZE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-100000}"; size="${2:-64}"; rounds="${3:-3}"
uwsgi="${FLARE_UWSGI:-target/uwsgi-venv/bin/uwsgi}"
py="${FLARE_PYTHON:-target/py-venv/bin/python}"
# Absolute (relative or not), without resolving the venv's symlink.
py="$(cd "$(dirname "$py")" && pwd)/$(basename "$py")"
apps="$PWD/bench/uwsgi"
# uwsgidecorators for uWSGI's Python (pyuwsgi's venv) and flare's.
for p in "$(dirname "$uwsgi")/python" "$py"; do
  "$p" -c "import uwsgidecorators" 2>/dev/null || "$p" -m pip install --quiet --disable-pip-version-check uwsgidecorators==1.1.0
done

one() { # side out
  local side="$1" out="$2" pid
  mkdir -p "$out"
  if [ "$side" = uwsgi ]; then
    BENCH_N="$n" BENCH_SIZE="$size" BENCH_OUT="$out" "$uwsgi" --master --processes 1 --mule \
      --socket "$out/uwsgi.sock" --pythonpath "$apps" --module mulemsg_app --die-on-term \
      --no-orphans --disable-logging >"$out/log" 2>&1 &
  else
    (cd "$apps" && BENCH_N="$n" BENCH_SIZE="$size" BENCH_OUT="$out" "$py" -m flare \
      --workers 1 --mules 1 mulemsg_app >"$out/log" 2>&1) &
  fi
  pid=$!
  for _ in $(seq 1 1200); do
    [ -f "$out/result.json" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if [ -f "$out/result.json" ]; then
    cat "$out/result.json"
  else
    echo '{"error": "no result"}'
    tail -5 "$out/log" >&2
    failed=1
  fi
}

failed=0

tmp="$(mktemp -d)"
echo "mule messages: $n of $size bytes, worker 1 -> mule 1, $rounds rounds (alternating)"
for r in $(seq 1 "$rounds"); do
  for side in uwsgi flare; do
    printf '%-6s round %s: ' "$side" "$r"
    one "$side" "$tmp/$side-$r"
    echo
  done
done
rm -rf "$tmp"
exit "$failed"

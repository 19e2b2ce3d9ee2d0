"""The spooler benchmark: one script for uWSGI and for flare's Python
package (``python -m flare``), Python handlers on both sides.

A mule drives it (uWSGI ``--mule=spoolmule.py``, flare ``--mules 1
--mule-entry spoolbench:mule_main``):

1. throughput: spools BENCH_N jobs as fast as it can (enqueue rate), then
   waits until every job has run (completion rate: jobs per second from
   the first spool() to the last job's end);
2. latency: BENCH_PINGS jobs one at a time into idle spoolers, each
   recording the time from its spool() to its start.

Each job appends ``id start_ns end_ns`` to BENCH_OUT/runs.txt (one
``write``, ``O_APPEND``); the mule writes BENCH_OUT/result.json at the end.
"""

import json
import os
import time

import uwsgi

N = int(os.environ.get("BENCH_N", "2000"))
PINGS = int(os.environ.get("BENCH_PINGS", "20"))
OUT = os.environ.get("BENCH_OUT", ".")
RUNS = os.path.join(OUT, "runs.txt")


def job(args):
    start = time.time_ns()
    line = f"{args[b'id'].decode()} {int(args[b't0'])} {start} {time.time_ns()}\n"
    fd = os.open(RUNS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, line.encode())
    os.close(fd)
    return uwsgi.SPOOL_OK


uwsgi.spooler = job


def _runs():
    try:
        with open(RUNS) as f:
            return [line.split() for line in f.read().splitlines() if line]
    except FileNotFoundError:
        return []


def _wait_for(count, deadline_s=300.0):
    """Waits until ``count`` distinct jobs have run. Polls by counting the
    new lines only (a whole parse of a growing file every 5 ms would take
    a core from the spoolers on a small machine), and parses the file once
    the count is there."""
    end = time.monotonic() + deadline_s
    lines = 0
    fd = None
    try:
        while time.monotonic() < end:
            if fd is None:
                try:
                    fd = os.open(RUNS, os.O_RDONLY)
                except FileNotFoundError:
                    time.sleep(0.005)
                    continue
            chunk = os.read(fd, 1 << 20)
            lines += chunk.count(b"\n")
            if lines >= count:
                rows = _runs()
                if len({r[0] for r in rows}) >= count:
                    return rows
            if len(chunk) < 1 << 20:
                time.sleep(0.005)
    finally:
        if fd is not None:
            os.close(fd)
    return _runs()


def _pct(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def mule_main():
    if os.path.exists(os.path.join(OUT, "result.json")):
        while True:
            time.sleep(3600)
    # Throughput.
    t_first = time.time_ns()
    for i in range(N):
        uwsgi.spool({b"id": str(i).encode(), b"t0": str(time.time_ns()).encode()})
    t_spooled = time.time_ns()
    rows = _wait_for(N)
    ids = {r[0] for r in rows}
    ends = [int(r[3]) for r in rows]
    result = {
        "jobs": N,
        "enqueue_per_s": N / ((t_spooled - t_first) / 1e9),
        "complete_per_s": N / ((max(ends) - t_first) / 1e9) if ends else 0,
        "lost": N - len(ids),
        "ran_twice": len(rows) - len(ids),
    }
    # Latency, one job at a time into idle spoolers.
    lat = []
    for k in range(PINGS):
        jid = f"ping{k}"
        t0 = time.time_ns()
        uwsgi.spool({b"id": jid.encode(), b"t0": str(t0).encode()})
        rows = _wait_for(N + k + 1)
        start = [int(r[2]) for r in rows if r[0] == jid]
        if start:
            lat.append((start[0] - t0) / 1e6)
    result.update(
        pings=PINGS,
        pings_lost=PINGS - len(lat),
        start_p50_ms=_pct(lat, 50),
        start_p99_ms=_pct(lat, 99),
    )
    tmp = os.path.join(OUT, "result.json.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f)
    os.rename(tmp, os.path.join(OUT, "result.json"))
    while True:
        time.sleep(3600)

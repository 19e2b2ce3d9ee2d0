"""The uWSGI side of flare-bench: the Python twin of bench/src/node.rs.

uWSGI imports this module in its master before forking (``--module
flarebench``), so every handler below is registered in the master and
inherited by every worker and mule, and so is BOARD, a shared anonymous
mmap with the same layout as bench/src/board.rs. The sending mule runs
``mule.py``, which calls ``mule_main()``.

Configuration comes from the environment (set by the harness):
BENCH_SCENARIO, BENCH_N, BENCH_WARMUP, BENCH_WORKERS, BENCH_OUT (directory
for result.json) and BENCH_QUIET_MS (how long the handled counts must stay
still before a run with lost signals is considered over).

Protocol with the harness (on uWSGI's log): ``READY worker N`` after each
worker forks, ``RESULT`` once ``BENCH_OUT/result.json`` is written.
"""

import json
import mmap
import os
import struct
import sys
import time

import uwsgi

SCENARIO = os.environ.get("BENCH_SCENARIO", "resources")
N = int(os.environ.get("BENCH_N", "0"))
WARMUP = int(os.environ.get("BENCH_WARMUP", "0"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))
OUT = os.environ.get("BENCH_OUT", ".")
QUIET_S = int(os.environ.get("BENCH_QUIET_MS", "500")) / 1000.0

# Signal numbers, as in bench/src/node.rs.
PING, PONG, FLOOD, FAN, REMOTE, REPORT = 1, 2, 3, 4, 5, 98

# The board, in 64-bit words, as in bench/src/board.rs.
T0, ROUND, SENDER_DONE, STARTS = 0, 1, 2, 3
SLOTS, SLOT_WORDS = 16, 4
READY, COUNT, LAST, SEEN = 0, 1, 2, 3
SAMPLES, MAX_SAMPLES = 512, 1 << 18
# fileno -1: anonymous and MAP_SHARED, so forked processes share it.
BOARD = mmap.mmap(-1, (SAMPLES + MAX_SAMPLES) * 8)

_WORD = struct.Struct("<Q")
_PAIR = struct.Struct("<QQ")
now = time.monotonic_ns  # CLOCK_MONOTONIC, like the Rust side


def get(word):
    return _WORD.unpack_from(BOARD, word * 8)[0]


def put(word, value):
    _WORD.pack_into(BOARD, word * 8, value)


def slot(wid, field):
    return SLOTS + wid * SLOT_WORDS + field


def say(line):
    """One line on stdout in one write(), so lines from several processes
    sharing the pipe never interleave (print() writes each argument and the
    newline separately when stdout is unbuffered, e.g. PYTHONUNBUFFERED=1)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# This worker's id and its handled count, set after fork.
ME = 0
_handled = 0


def _post_fork():
    global ME
    wid = uwsgi.worker_id()
    if wid > 0:
        ME = wid
        put(slot(wid, READY), 1)
        say("READY worker %d" % wid)


uwsgi.post_fork_hook = _post_fork


# ---- handlers (they run in workers and mules) ----

def on_ping(num):
    uwsgi.signal(PONG)


def on_ping_one_way(num):
    t1 = now()
    put(SAMPLES + get(ROUND), t1 - get(T0))
    uwsgi.signal(PONG)


def on_count(num):
    global _handled
    t = now()
    _handled += 1
    # COUNT and LAST are adjacent words of the slot.
    _PAIR.pack_into(BOARD, slot(ME, COUNT) * 8, _handled, t)


def on_fan(num):
    t = now()
    put(slot(ME, LAST), t)
    put(slot(ME, SEEN), get(ROUND))


def _noop(num):
    pass


if SCENARIO == "ping-pong":
    uwsgi.register_signal(PING, "worker1", on_ping)
    uwsgi.register_signal(PONG, "mule1", _noop)
elif SCENARIO == "one-way":
    uwsgi.register_signal(PING, "worker1", on_ping_one_way)
    uwsgi.register_signal(PONG, "mule1", _noop)
elif SCENARIO == "burst":
    uwsgi.register_signal(FLOOD, "workers", on_count)
elif SCENARIO == "pool":
    uwsgi.register_signal(FLOOD, "worker", on_count)
elif SCENARIO == "trickle":
    uwsgi.register_signal(FLOOD, "workers", on_count)
elif SCENARIO == "fan-out":
    uwsgi.register_signal(FAN, "workers", on_fan)
elif SCENARIO == "remote":
    uwsgi.register_signal(REMOTE, "worker", on_count)
    uwsgi.register_signal(REPORT, "mule1", _noop)


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"flare-bench\n"]


# ---- the sending mule ----

def publish(obj):
    tmp = os.path.join(OUT, "result.json.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, os.path.join(OUT, "result.json"))
    say("RESULT")


def idle():
    # A mule whose script returns is forked again: never return.
    while True:
        time.sleep(3600)


def fail(why):
    publish({"error": why})
    idle()


def wait_ready(k):
    deadline = time.monotonic() + 30
    while not all(get(slot(w, READY)) == 1 for w in range(1, k + 1)):
        if time.monotonic() > deadline:
            fail("workers did not start within 30 s")
        time.sleep(0.001)


def counts():
    return [get(slot(w, COUNT)) for w in range(1, WORKERS + 1)]


def quiesce(expected):
    """Handled counts once they reach `expected` or stay still for QUIET_S
    (uWSGI drops signals, so the total may never be reached)."""
    deadline = time.monotonic() + 120
    last, still_since = None, time.monotonic()
    while True:
        c = counts()
        total = sum(c)
        t = time.monotonic()
        if expected is not None and total >= expected:
            return c
        if total != last:
            last, still_since = total, t
        elif t - still_since >= QUIET_S or t > deadline:
            return c
        time.sleep(0.01)


def latency(one_way):
    wait_ready(1)
    signal, wait = uwsgi.signal, uwsgi.signal_wait
    rtt = []
    for i in range(WARMUP + N):
        t0 = now()
        if one_way:
            put(ROUND, i)
            put(T0, t0)
        signal(PING)
        wait(PONG)
        if i >= WARMUP:
            rtt.append(now() - t0)
    if one_way:
        fwd = [get(SAMPLES + i) for i in range(WARMUP, WARMUP + N)]
        publish({"samples_ns": fwd, "rtt_ns": rtt})
    else:
        publish({"samples_ns": rtt})


def flood():
    wait_ready(WORKERS)
    signal = uwsgi.signal
    put(T0, now())
    for _ in range(N):
        signal(FLOOD)
    put(SENDER_DONE, now())
    per_signal = WORKERS if SCENARIO == "burst" else 1
    c = quiesce(N * per_signal)
    publish({
        "sent": N,
        "t0": get(T0),
        "sender_done": get(SENDER_DONE),
        "counts": c,
        "last": [get(slot(w, LAST)) for w in range(1, WORKERS + 1)],
    })


def trickle():
    wait_ready(WORKERS)
    say("START")
    t0 = now()
    for i in range(N):
        uwsgi.signal(FLOOD)
        # The schedule, not a synchronisation: one per millisecond.
        delay = t0 + (i + 1) * 1000000 - now()
        if delay > 0:
            time.sleep(delay / 1e9)
    publish({"sent": N, "counts": quiesce(N * WORKERS)})


def fan_out():
    wait_ready(WORKERS)
    ws = range(1, WORKERS + 1)
    samples = []
    for r in range(1, WARMUP + N + 1):
        put(ROUND, r)
        t0 = now()
        uwsgi.signal(FAN)
        deadline = time.monotonic() + 10
        while not all(get(slot(w, SEEN)) == r for w in ws):
            if time.monotonic() > deadline:
                fail("round %d not handled by all within 10 s" % r)
            time.sleep(0.0001)
        last = max(get(slot(w, LAST)) for w in ws)
        if r > WARMUP:
            samples.append(last - t0)
    publish({"samples_ns": samples, "workers": WORKERS})


def remote():
    # The harness raises REPORT remotely once its client is done.
    while True:
        uwsgi.signal_wait(REPORT)
        publish({"counts": quiesce(None)})


def mule_main():
    starts = get(STARTS) + 1
    put(STARTS, starts)
    if starts > 1:
        fail("the sending mule was forked again: it died during the run")
    runs = {
        "ping-pong": lambda: latency(False),
        "one-way": lambda: latency(True),
        "burst": flood,
        "pool": flood,
        "fan-out": fan_out,
        "trickle": trickle,
        "remote": remote,
    }
    try:
        runs[SCENARIO]()
    except Exception as e:  # reported, never a respawn loop
        fail("%s: %r" % (SCENARIO, e))
    idle()

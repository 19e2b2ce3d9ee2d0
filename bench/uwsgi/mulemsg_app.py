"""Mule messages per second, the same script on uWSGI and on flare.

Worker 1 (from its post-fork hook) sends BENCH_N messages of BENCH_SIZE
bytes to mule 1 with ``uwsgi.mule_msg``; a message that is refused (uWSGI
drops it when the mule's queue is full and returns False) is sent again
and counted. Mule 1 reads them with uwsgidecorators' ``@mulemsg(1)`` loop
and, at the last one, writes BENCH_OUT/result.json: messages, seconds
from the first send, messages per second, refusals. Run by bench/mulemsg.sh.
"""

import json
import os
import struct
import time

import uwsgi
from uwsgidecorators import mulemsg, postfork

N = int(os.environ.get("BENCH_N", "100000"))
SIZE = max(16, int(os.environ.get("BENCH_SIZE", "64")))
OUT = os.environ.get("BENCH_OUT", ".")
_HEAD = struct.Struct("<Qd")  # index, send start (CLOCK_MONOTONIC)
_got = [0]


@postfork
def sender():
    if uwsgi.worker_id() != 1:
        return
    t0 = time.monotonic()
    pad = b"x" * (SIZE - _HEAD.size)
    refused = 0
    for i in range(N):
        msg = _HEAD.pack(i, t0) + pad
        while not uwsgi.mule_msg(msg, 1):
            refused += 1
    with open(os.path.join(OUT, "refused"), "w") as f:
        f.write(str(refused))


@mulemsg(1)
def receive(message):
    _got[0] += 1
    if _got[0] == N:
        i, t0 = _HEAD.unpack_from(message)
        secs = time.monotonic() - t0
        refused_path = os.path.join(OUT, "refused")
        deadline = time.monotonic() + 30
        while not os.path.exists(refused_path) and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = int(open(refused_path).read() or 0) if os.path.exists(refused_path) else -1
        result = {"messages": N, "secs": secs, "per_sec": N / secs, "refused": refused}
        tmp = os.path.join(OUT, "result.tmp")
        with open(tmp, "w") as f:
            json.dump(result, f)
        os.rename(tmp, os.path.join(OUT, "result.json"))


def application(environ, start_response):  # uWSGI wants an app; unused
    start_response("200 OK", [])
    return [b""]

"""An app written for uWSGI's mules: uwsgidecorators' @mulefunc, @farm,
@mulemsg, @mule, @harakiri and @rpc, unmodified. Every message handled
prints `RAN <what> <process>` and acks to worker 1 with signal 60; worker 1
drives the script, checks the bounds, then stops the group.

Mules: 1 runs @mulefunc(1) calls (no code of its own: flare reads its
messages for uwsgi.mule_msg_hook, as uWSGI does), 2 and 3 are farm `pool`
(@farm), 4 runs @mulemsg(4), 5 reads nothing until signal 63 (@mule(5))."""

import os
import pickle
import threading

import flare
import uwsgi
from flare.runtime.mules import Farm, Mule
from uwsgidecorators import farm, harakiri, mule, mulefunc, mulemsg, rpc, signal

N = 40
MARK = os.path.join(os.environ["FLARE_TEST_DIR"], "hung-once")


def note(what):
    role, pid_id, _ = flare.whoami()
    os.write(1, f"RAN {what} {role}{pid_id}\n".encode())


@mulefunc(1)
def offloaded(i, twice=False):
    note(f"mulefunc:{i}:{twice}")
    uwsgi.signal(60)


@Mule(1).offload()
def via_runtime(i):
    # flare.runtime.mules (uwsgiconf's names), beside uwsgidecorators' hook.
    note(f"offload:{i}")
    uwsgi.signal(60)


@farm("pool")
def pooled(message):
    note(f"farm:{message.decode()}")
    uwsgi.signal(60)


@mulemsg(4)
def mule4(message):
    note(f"mulemsg:{message.decode()}")
    uwsgi.signal(60)


@mulefunc(5)
def held(i):
    note(f"held:{i}")
    uwsgi.signal(60)


_release = threading.Event()


@signal(63, target="mule5")
def release(num):
    _release.set()


@mule(5)
def wait_for_release():
    _release.wait()


@rpc("add")
def add(a, b):
    return str(int(a) + int(b)).encode()


@harakiri(1)
def hang():
    open(MARK, "w").close()
    threading.Event().wait()


@signal(61, target="worker2")
def slow(num):
    note(f"received:{uwsgi.signal_received()}")
    if not os.path.exists(MARK):
        hang()
    note("after-respawn")
    uwsgi.signal(62)


_acks = 0
_done = threading.Condition()


@signal(60, target="worker1")
def ack(num):
    global _acks
    with _done:
        _acks += 1
        _done.notify_all()


@signal(62, target="worker1")
def harakiri_over(num):
    with _done:
        note("harakiri-over")
        _done.notify_all()


def wait_acks(n):
    with _done:
        ok = _done.wait_for(lambda: _acks >= n, timeout=60)
    note(f"acks:{_acks}:{ok}")


def main():
    if uwsgi.worker_id() != 1:
        flare.serve_forever()
    note(f"rpc:{uwsgi.call('add', b'1', b'2').decode()}")
    for i in range(N):
        offloaded(i, twice=True)
        uwsgi.farm_msg("pool", f"{i}")
        uwsgi.mule_msg(f"{i}".encode(), 4)
    for i in range(5):
        via_runtime(i)
    note("farms:" + ",".join(f.name + "=" + "+".join(str(m.id) for m in f.mules) for f in Farm.get_farms()))
    try:
        uwsgi.mule_msg(b"x" * (64 * 1024 + 1), 1)
    except ValueError as e:
        note("too-large:" + str(e).replace(" ", "_"))
    # Mule 5 reads nothing yet: fill its mailbox without waiting.
    queued = 0
    while uwsgi.try_mule_msg(pickle.dumps({"service": "uwsgi_mulefunc", "func": "held", "args": (queued,), "kwargs": {}}), 5):
        queued += 1
    note(f"full-after:{queued}")
    late = threading.Thread(target=held, args=(queued,))
    late.start()
    late.join(0.2)
    note(f"sender-waiting:{late.is_alive()}")
    uwsgi.signal(63)
    late.join()
    wait_acks(3 * N + 5 + queued + 1)
    uwsgi.signal(61)
    with _done:
        _done.wait(timeout=60)
    print("DONE", flush=True)
    flare.stop()
    flare.serve_forever()

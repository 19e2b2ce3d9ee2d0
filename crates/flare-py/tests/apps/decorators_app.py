"""An app written for uWSGI: uwsgidecorators and uwsgiconf scheduling,
unmodified, registered at import time in the master. Every handler run
prints `RAN <what> <process>`; worker 1 drives the script, then stops."""

import os
import time

import flare
import uwsgi
from uwsgiconf.runtime.scheduling import register_timer_ms
from uwsgidecorators import cron, filemon, rbtimer, signal, timer

WATCHED = os.path.join(os.environ["FLARE_TEST_DIR"], "watched.txt")


def note(what):
    role, pid_id, _ = flare.whoami()
    # One write per line: lines from several processes share the pipe.
    os.write(1, f"RAN {what} {role}{pid_id}\n".encode())


@timer(1, target="workers")
def every_second(num):
    note("timer")


@rbtimer(1, target="mule1")
def rb(num):
    note("rbtimer")


@cron(-1, -1, -1, -1, -1, target="mules")
def every_minute(num):
    note("cron")


@filemon(WATCHED, target="spooler")
def changed(num):
    note("filemon")


@signal(40, target="mules")
def to_mules(num):
    note("mules")


@signal(41, target="farm_reports")
def to_farm(num):
    note("farm")


@register_timer_ms(300, target="mule2")
def ms(num):
    note("mstimer")


def main():
    if uwsgi.worker_id() != 1:
        flare.serve_forever()
    # Registered at run time in worker 1: only worker 1 runs it.
    uwsgi.register_signal(50, "workers", lambda num: note("runtime"))
    for _ in range(3):
        uwsgi.signal(50)
    with open(WATCHED, "w") as f:
        f.write("changed")
    for _ in range(2):
        uwsgi.signal(40)
    for _ in range(4):
        uwsgi.signal(41)
    # Observation window for the timers.
    time.sleep(2.5)
    print("DONE", flush=True)
    flare.stop()
    flare.serve_forever()

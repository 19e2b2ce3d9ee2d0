"""A WSGI app written for uWSGI, unmodified: uwsgidecorators for a timer
and two signals, uwsgiconf.runtime for a third, uwsgi.signal() from a
request, and @spool jobs (attach_jobs) spooled from a request. Run by
gunicorn next to
`python -m flare --attach`; every event is one line in
$FLARE_TEST_DIR/events.txt ("what worker_id pid time")."""

import os
import time

import uwsgi
from uwsgiconf.runtime.signals import Signal as UwsgiconfSignal
from uwsgidecorators import signal, timer

import attach_jobs
from attach_events import log


@timer(1)
def tick(num):
    log("tick")


@signal(17, target="workers")
def everyone(num):
    log("workers")


@signal(18)
def pooled(num):
    # Pool signal (target "worker"): one member each. Slow enough that
    # several are held by a member when it is killed.
    log("pool-start")
    time.sleep(0.2)
    log("pool-done")


@UwsgiconfSignal(19).register_handler(target="workers")
def through_uwsgiconf(*_):
    # uwsgiconf.runtime, unmodified, on the same uwsgi module.
    log("uwsgiconf")


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path.startswith("/raise/"):
        num, _, count = path[len("/raise/"):].partition("/")
        for _ in range(int(count or 1)):
            uwsgi.signal(int(num))
    if path.startswith("/spool/"):
        # Jobs for the group's spooler, spooled from an attached worker.
        for n in range(int(path[len("/spool/"):])):
            attach_jobs.job.spool(n=str(n))
    if path == "/fork":
        # A process forked from an attached worker is not a member.
        child = os.fork()
        if child == 0:
            try:
                uwsgi.signal(17)
                log("forked-sent")
            except Exception as e:
                log("forked-refused" if "forked from an attached worker" in str(e) else "forked-other")
            os._exit(0)
        os.waitpid(child, 0)
    body = f"worker {uwsgi.worker_id()} pid {os.getpid()} master {uwsgi.masterpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

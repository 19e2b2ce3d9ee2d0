"""The deployment examples' app: a WSGI app written for uWSGI, unmodified.
gunicorn serves it; its timer and signals run in the flare group its
workers joined (gunicorn.conf.py)."""

import os

import uwsgi
from uwsgidecorators import cron, signal, timer


@timer(60)
def every_minute(num):
    # Once a minute in one of the web workers, however many there are.
    print(f"worker{uwsgi.worker_id()} (pid {os.getpid()}): minute tick", flush=True)


@cron(0, 3, -1, -1, -1)
def nightly(num):
    print("the nightly job runs once, at 03:00", flush=True)


@signal(17, target="workers")
def reload_settings(num):
    print(f"worker{uwsgi.worker_id()}: settings reloaded", flush=True)


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/reload":
        uwsgi.signal(17)  # every web worker runs reload_settings
    body = f"served by worker{uwsgi.worker_id()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

"""The Dockerfile's example app: signal 17 runs in every worker every 5 s
(the handler and the timer are the master's, set up at import time)."""

import os

import uwsgi  # flare's uWSGI compatibility module under `python -m flare`

import flare
from flare.runtime.signals import Signal

TICK = Signal(17)


@TICK.register_handler(target="workers")
def tick(num):
    role, ident, pid = flare.whoami()
    os.write(1, f"{role}{ident} (pid {pid}) got signal {num}\n".encode())


uwsgi.add_timer(17, 5)


def main():
    flare.serve_forever()

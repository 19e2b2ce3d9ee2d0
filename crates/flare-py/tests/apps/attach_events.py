"""What the attach test apps share: every event is one line in
$FLARE_TEST_DIR/events.txt ("what worker_id pid time")."""

import os
import time

import uwsgi
from append_line import append_line

EVENTS = os.path.join(os.environ["FLARE_TEST_DIR"], "events.txt")


def log(what):
    append_line(EVENTS, f"{what} {uwsgi.worker_id()} {os.getpid()} {time.time():.3f}")

"""What the attach test apps share: every event is one line in
$FLARE_TEST_DIR/events.txt ("what worker_id pid time"), written with one
write and O_APPEND, so lines from several processes never mix."""

import os
import time

import uwsgi

EVENTS = os.path.join(os.environ["FLARE_TEST_DIR"], "events.txt")


def log(what):
    line = f"{what} {uwsgi.worker_id()} {os.getpid()} {time.time():.3f}\n"
    fd = os.open(EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)

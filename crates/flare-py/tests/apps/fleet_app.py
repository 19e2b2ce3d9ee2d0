"""One node of a fleet, from Python: `python -m flare --workers 2 --fleet URL
--fleet-name NAME --node NODE fleet_app`.

- 17 (workers): prints ``GOT17 node worker``;
- a fleet-unique 1 s timer (flare's ``register_timer(fleet_unique=True)``):
  ``TICK node ms``;
- 30 (worker1): ``uwsgi.signal(17, remote="fleet:workers")`` from inside
  the group, then ``SENT ok`` or ``SENT error ...``;
- 31 (worker1): ``flare.fleet_send("node:nope:workers", 17)``: ``NOPE ...``.
"""

import os
import time

import flare
import uwsgi
from flare.runtime.scheduling import register_timer
from flare.runtime.signals import Signal

NODE = os.environ["FLEET_NODE"]


def say(text):
    # One write per line: the workers share the pipe (print writes the
    # text and the newline separately, which interleaves).
    os.write(1, (text + "\n").encode())


@Signal(17).register_handler(target="workers")
def got17(num):
    try:
        me = flare.whoami()
        say(f"GOT17 {NODE} {me[1] if me else '?'}")
    except Exception as e:  # shown by the test, never silent
        say(f"GOT17 {NODE} error {e!r}")


@register_timer(1, target="worker", fleet_unique=True)
def tick(num):
    say(f"TICK {NODE} {int(time.time() * 1000)}")


@Signal(30).register_handler(target="worker1")
def send_from_inside(num):
    try:
        uwsgi.signal(17, remote="fleet:workers")
        say("SENT ok")
    except OSError as e:
        say(f"SENT error {e}")


@Signal(31).register_handler(target="worker1")
def send_to_nobody(num):
    try:
        flare.fleet_send("node:nope:workers", 17)
        say("NOPE sent?")
    except OSError as e:
        say(f"NOPE {e}")

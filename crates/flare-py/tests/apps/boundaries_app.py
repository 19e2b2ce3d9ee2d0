"""The fork and exit boundaries as a Python user meets them.

At import (in the master) it writes a line to stdout without flushing; a
child must neither lose what it writes before it ends nor write the
master's buffered line a second time. Signal 7's handler raises."""

import os
import sys

import flare
from flare.runtime.signals import Signal

print("MASTER-BUFFERED")

MARKER = os.path.join(os.environ["FLARE_TEST_DIR"], "first-life-done")


@Signal(7)
def fails(num):
    raise ValueError(f"handler of {num} fails on purpose")


def raising():
    """Raises signal 7 three times, then stops the group (queued signals
    are handled before it ends)."""
    for _ in range(3):
        Signal(7).send()
    flare.stop()
    flare.serve_forever()


def two_lives():
    """Writes a line (buffered) and ends its first life by returning; the
    respawned worker writes it again and stops the group."""
    print("WORKER-LIFE", flare.whoami()[2])
    if not os.path.exists(MARKER):
        open(MARKER, "w").close()
        return
    sys.stdout.flush()
    flare.stop()
    flare.serve_forever()

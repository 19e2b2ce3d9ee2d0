"""Refusals the master sends back to a worker over its channel reach
Python as the exceptions uwsgiconf documents (ValueError for a refused
registration, NoSignalAvailable when every number is taken), with the
master's message."""

import flare
from flare.runtime.signals import Signal


def expect(exc, what, call):
    try:
        call()
    except exc as e:
        print(f"RAISED {what} {type(e).__name__}: {e}", flush=True)
    else:
        print(f"NOT RAISED {what}", flush=True)


def main():
    try:
        Signal(7).register_handler(target="worker1")(lambda n: None)
        # Same process, same number, another target: the master refuses.
        expect(
            ValueError,
            "conflict",
            lambda: Signal(7).register_handler(target="workers")(lambda n: None),
        )
        expect(
            ValueError,
            "bad-target",
            lambda: Signal(8).register_handler(target="farm_nope")(lambda n: None),
        )

        def take_all():
            for _ in range(257):
                Signal()

        expect(flare.NoSignalAvailable, "no-number", take_all)
    finally:
        flare.stop()
        flare.serve_forever()

"""The wheel's smoke test app, run by .ci/release-check against the wheel
installed in a fresh venv, from an empty directory:

    python -m flare --workers 2 --summary smoke_app:main

A handler registered in the master at import time (so both workers inherit
it) runs for signal 17, which worker 1 raises; worker 1 then stops the
group, whose queued signals are handled first."""

import os

import flare
from flare.runtime.signals import Signal

SIG = Signal(17)


@SIG.register_handler(target="workers")
def handled(num):
    role, ident, _pid = flare.whoami()
    os.write(1, f"HANDLED {num} {role}{ident}\n".encode())
    if ident == 1:
        flare.stop()


def main():
    if flare.whoami()[1] == 1:
        SIG.send()
    flare.serve_forever()

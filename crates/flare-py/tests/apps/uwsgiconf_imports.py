"""Imports every module of uwsgiconf.runtime inside a flare worker (with
`import uwsgi` giving flare's module) and uses the platform names."""

import importlib
import os

import flare

MODULES = (
    "alarms asynced caching control locking logging monitoring mules platform "
    "request rpc scheduling signals spooler websockets"
).split()


def say(line):
    os.write(1, (line + "\n").encode())


def main():
    import uwsgi

    if uwsgi.worker_id() != 1:
        flare.serve_forever()
    for name in MODULES:
        try:
            importlib.import_module("uwsgiconf.runtime." + name)
            say(f"IMPORT {name} ok")
        except Exception as e:  # the test prints what failed
            say(f"IMPORT {name} {type(e).__name__}:{e}")
    from uwsgiconf.runtime.platform import uwsgi as platform

    say(f"CORES {platform.cores_count}")
    say(f"HOSTNAME {platform.hostname}")
    say(f"STARTED {platform.started_on}")
    say(f"WORKER {platform.worker_id}")
    say(f"WORKERS {len(platform.workers_info)}")
    say(f"MEM {platform.memory[0] > 0}")
    say(f"MICROS {platform.clock > 0}")
    say(f"VERSION {platform.get_version()}")

    uwsgi.log("LOGGED via uwsgi.log")
    try:
        uwsgi.alarm("x", "y")
    except NotImplementedError as e:
        say(f"ALARM {e}")
    say("DONE")
    flare.stop()
    flare.serve_forever()

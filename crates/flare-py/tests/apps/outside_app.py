"""uwsgidecorators and uwsgiconf outside any flare group (a test, manage.py):
registrations are recorded, send() raises a clear error or runs inline."""

import sys

import uwsgi
from uwsgidecorators import cron, signal, spool, timer

import flare
import flare.testing

ran = []


@timer(60)
def every_minute(num):
    ran.append(("timer", num))


@signal(17, target="workers")
def everyone(num):
    ran.append(("workers", num))


# uwsgidecorators refuses @spool at import unless uwsgi.opt has 'spooler':
# a web worker imports its app before it attaches.
@spool
def report(args):
    ran.append(("spool", args))


@cron(0, 3, -1, -1, -1)
def nightly(num):
    ran.append(("cron", num))


def main():
    print("UWSGI", uwsgi.__name__, uwsgi.masterpid() != 0, uwsgi.worker_id())
    kinds = [(r.kind, r.num) for r in flare.testing.registrations()]
    print("RECORDED", kinds)
    # Numbers picked by uwsgidecorators' get_free_signal() differ.
    print("REGISTERED", uwsgi.signal_registered(17), uwsgi.signal_registered(99))
    try:
        uwsgi.signal(17)
    except flare.NotInGroup as e:
        print("NOTINGROUP", "flare.attach" in str(e) and "run_inline" in str(e))
    try:
        report.spool(n="1")
    except flare.NotInGroup as e:
        print("SPOOLNOTINGROUP", str(e).startswith("uwsgi.spool(): this process is not in a flare group"))
    with flare.testing.run_inline():
        uwsgi.signal(17)
    print("INLINE", ran)
    print("FIRED", flare.testing.fire(kinds[0][1]), ran[-1][0])
    try:
        uwsgi.register_signal(3, "wrkers", lambda n: 0)
    except ValueError as e:
        print("BADTARGET", "wrkers" in str(e) and "workers" in str(e))
    try:
        flare.attach()
    except ValueError as e:
        print("NOPATH", "FLARE_ATTACH" in str(e))
    try:
        flare.attach("/nonexistent/flare.attach")
    except ConnectionError as e:
        print("UNREACHABLE", "/nonexistent/flare.attach" in str(e))
    print("WHOAMI", flare.whoami())
    return 0


if __name__ == "__main__":
    sys.exit(main())

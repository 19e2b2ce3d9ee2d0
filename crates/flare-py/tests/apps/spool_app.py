"""An app written for uWSGI's spooler and locks, with uwsgidecorators
unmodified: @spool, @spoolforever, @spool(pass_arguments=True), @lock.
Every job and critical section appends a line to runs.txt and raises
signal 50; worker 1's handler stops the group once everything ran."""

import os
import time
from collections import Counter

import flare
import uwsgi
from append_line import append_line
from uwsgidecorators import lock, signal, spool, spoolforever

DIR = os.environ["FLARE_TEST_DIR"]
RUNS = os.path.join(DIR, "runs.txt")
INSIDE = os.path.join(DIR, "inside")


def note(line):
    append_line(RUNS, line)
    uwsgi.signal(50)


def counts():
    with open(RUNS) as f:
        return Counter(line.split()[0] for line in f if line.strip())


@spool
def plain(args):
    note(f"spool {args['n']} {uwsgi.i_am_the_spooler()} {args['spooler_task_name'].startswith(DIR)}")


@spoolforever
def forever(args):
    note("forever")


@spool(pass_arguments=True)
def with_args(a, b, c=None):
    note(f"args {a!r} {b!r} {c!r}")


@lock
def critical(wid):
    try:
        fd = os.open(INSIDE, os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        note("overlap")
        return
    os.close(fd)
    time.sleep(0.01)  # the critical section's work
    os.unlink(INSIDE)
    note(f"locked {wid}")


@signal(50, target="worker1")
def progress(num):
    c = counts()
    if c["spool"] == 3 and c["args"] == 1 and c["forever"] >= 3 and c["locked"] + c["overlap"] == 15:
        flare.stop()


def main():
    wid = uwsgi.worker_id()
    if wid == 1:
        try:
            uwsgi.spool({b"ok": b"1", b"bad": 7})
        except TypeError as e:
            note(f"typeerror {'bad' in str(e)}")
        assert uwsgi.set_spooler_frequency(0.2)
        for n in range(3):
            plain.spool({"n": str(n)})
        forever.spool()
        with_args.spool(1, [2, "two"], c={"three": 3})
        note(f"jobs_listed {isinstance(uwsgi.spooler_jobs(), list)}")
    for _ in range(5):
        critical(wid)
    flare.serve_forever()

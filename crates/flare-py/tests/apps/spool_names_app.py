"""uWSGI's spooler names beyond spool(): spooler_pid(), spooler_pids(),
spooler_get_task(), and flare's spool_many(). Worker 1 checks what it can
see and spools; the jobs' handler (in the spoolers) reports its own pid
against spooler_pids(); worker 1 stops the group once both jobs ran."""

import os
import time

import flare
import uwsgi
from append_line import append_line

DIR = os.environ["FLARE_TEST_DIR"]
RUNS = os.path.join(DIR, "runs.txt")


def note(line):
    append_line(RUNS, line)


def job(args):
    pids = uwsgi.spooler_pids()
    note(f"ran {args[b'k'].decode()} {os.getpid() in pids} {uwsgi.spooler_pid() == pids[0]} {args.get(b'body', b'-').decode()}")
    uwsgi.signal(51)
    return uwsgi.SPOOL_OK


uwsgi.spooler = job


def progress(num):
    # Both jobs ran, and worker 1 noted what spool_many returned (it
    # raises 51 itself after that note, as the jobs may run first).
    with open(RUNS) as f:
        lines = f.read().splitlines()
    if sum(1 for line in lines if line.startswith("ran ")) == 2 and any(
        line.startswith("batch ") for line in lines
    ):
        flare.stop()


uwsgi.register_signal(51, "worker1", progress)


def main():
    if uwsgi.worker_id() != 1:
        flare.serve_forever()
    # Spoolers may start after this worker: wait (with a deadline) for
    # both to have a pid.
    end = time.monotonic() + 30
    while 0 in uwsgi.spooler_pids() and time.monotonic() < end:
        time.sleep(0.01)
    pids = uwsgi.spooler_pids()
    alive = all(os.path.exists(f"/proc/{p}") for p in pids)
    note(f"pids {len(pids)} {0 not in pids} {alive} {uwsgi.spooler_pid() == pids[0]}")
    # A job held back for an hour: read without running it.
    later = uwsgi.spool({b"k": b"later", b"at": str(int(time.time()) + 3600).encode(), "body": b"xyz"})
    task = uwsgi.spooler_get_task(later.decode())
    note(f"task {sorted(map(repr, task))} {task['spooler_task_name'] == later} {task[b'k']} {task['body']}")
    note(f"task_bytes_path {uwsgi.spooler_get_task(later)[b'k']}")
    os.unlink(later)  # deleting the file cancels the job
    note(f"missing {uwsgi.spooler_get_task(later)}")
    junk = os.path.join(DIR, "junk")
    with open(junk, "wb") as f:
        f.write(b"not a spool file")
    note(f"junk {uwsgi.spooler_get_task(junk)}")
    before = len(uwsgi.spooler_jobs())
    try:
        uwsgi.spool_many([{b"k": b"ok"}, {b"k": 3}])
    except TypeError:
        note(f"bad_batch {len(uwsgi.spooler_jobs()) == before}")
    paths = uwsgi.spool_many([{b"k": b"one", "body": b"B1"}, {"k": "two"}])
    note(f"batch {len(paths)} {all(isinstance(p, bytes) for p in paths)}")
    uwsgi.signal(51)
    flare.serve_forever()

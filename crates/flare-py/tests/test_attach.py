"""Web servers from PyPI (gunicorn, uvicorn, granian) whose workers join a
`python -m flare --attach` group, with apps using uwsgidecorators
unmodified. Every wait is for an event with a deadline; every "not more"
is checked against a later event."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from conftest import APPS, free_port

DEADLINE = 30.0


def have(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def events(tmp):
    path = Path(tmp) / "events.txt"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        what, wid, pid, at = line.split()
        out.append((what, int(wid), int(pid), float(at)))
    return out


def wait_until(what, pred, deadline=DEADLINE, logs=()):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.05)
    detail = "\n".join(Path(p).read_text(errors="replace")[-4000:] for p in logs if Path(p).exists())
    raise AssertionError(f"timed out waiting for {what}\n{detail}")


class Group:
    """`python -m flare --attach SOCK` (no forked workers), its output in files."""

    def __init__(self, tmp, *args):
        self.tmp = Path(tmp)
        self.sock = str(self.tmp / "flare.attach")
        self.out = self.tmp / "flare.out"
        self.err = self.tmp / "flare.err"
        env = dict(os.environ, FLARE_TEST_DIR=str(tmp), PYTHONPATH=str(APPS))
        env.pop("FLARE_ATTACH", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flare", "--attach", self.sock, "--summary", *args],
            cwd=str(APPS),
            env=env,
            stdout=open(self.out, "w"),
            stderr=open(self.err, "w"),
        )
        wait_until("the attach socket", self._listening, logs=[self.err])

    def _listening(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"flare exited {self.proc.returncode}:\n{self.err.read_text()}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(self.sock)
            return True
        except OSError:
            return False

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=DEADLINE) == 0, self.err.read_text()
        for line in self.out.read_text().splitlines():
            if line.startswith("SUMMARY "):
                return json.loads(line[len("SUMMARY "):])
        raise AssertionError(f"no summary:\n{self.out.read_text()}\n{self.err.read_text()}")

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Server:
    """A web server started with `python -m SERVER ARGS`, FLARE_ATTACH set."""

    def __init__(self, tmp, group, name, *args, env=None):
        self.port = free_port()
        self.log = Path(tmp) / f"{name}.log"
        full_env = dict(os.environ, FLARE_TEST_DIR=str(tmp), PYTHONPATH=str(APPS), FLARE_ATTACH=group.sock)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", name, *[a.replace("PORT", str(self.port)) for a in args]],
            cwd=str(APPS),
            env=full_env,
            stdout=open(self.log, "w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            assert r.status == 200
            return r.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def attached(tmp, n):
    """The last `n` distinct attached workers: {pid: worker id}, once `n` are."""
    now = {}
    for what, wid, pid, _ in events(tmp):
        if what == "attached":
            now[pid] = wid
    return now if len(now) >= n else None


def procs(summary, role):
    return [p for p in summary["processes"] if p["proc"]["role"] == role]


@pytest.mark.skipif(not have("gunicorn"), reason="gunicorn is not installed (.ci/run installs it)")
def test_gunicorn_sync_workers_join_the_group(tmp_path):
    group = Group(tmp_path, "--attach-workers", "6", "--attach-hold", "10")
    server = None
    try:
        server = Server(
            tmp_path, group, "gunicorn", "--preload", "-w", "4", "-b", "127.0.0.1:PORT",
            "-c", str(APPS / "attach_gunicorn_conf.py"), "attach_wsgi:application",
        )
        logs = [server.log, group.err]
        first = wait_until("4 gunicorn workers attached", lambda: attached(tmp_path, 4), logs=logs)
        slots = sorted(first.values())
        assert len(set(slots)) == 4 and all(1 <= s <= 6 for s in slots), first
        t0 = max(at for what, _, _, at in events(tmp_path) if what == "attached")

        # HTTP is gunicorn's: requests are served, by attached workers.
        for _ in range(8):
            body = server.get("/")
            wid = int(body.split()[1])
            assert wid in slots, body
            # uwsgi.masterpid() is flare's master, not gunicorn's.
            assert int(body.split()[5]) == group.proc.pid, body

        # A `workers` signal raised in a request reaches all 4.
        server.get("/raise/17")
        reach1 = wait_until(
            "signal 17 in 4 workers",
            lambda: (lambda s: s if len(s) == 4 else None)({pid for w, _, pid, _ in events(tmp_path) if w == "workers"}),
            logs=logs,
        )
        assert reach1 == set(first), (reach1, first)

        # A process forked by an attached worker is not a member: its send()
        # says so (worker id 0 in it), and the worker is still one.
        body = server.get("/fork")
        forked = wait_until(
            "the forked process's attempt",
            lambda: [(w, wid) for w, wid, _, _ in events(tmp_path) if w.startswith("forked")],
            logs=logs,
        )
        assert forked == [("forked-refused", 0)], forked
        assert int(body.split()[1]) in slots, body

        # 40 pool signals (target `worker`); kill a worker while it runs one.
        server.get("/raise/18/40")
        victim = wait_until(
            "a pool handler running",
            lambda: next((pid for w, _, pid, _ in events(tmp_path) if w == "pool-start"), None),
            logs=logs,
        )
        os.kill(victim, signal.SIGKILL)
        # Every pool signal is handled, the killed one's by the others.
        wait_until(
            "40 pool signals done",
            lambda: sum(1 for w, *_ in events(tmp_path) if w == "pool-done") >= 40,
            logs=logs,
        )
        after_kill = [pid for w, _, pid, _ in events(tmp_path) if w == "pool-done" and pid != victim]
        assert after_kill, "the other workers handled none of the pool signals"

        # gunicorn forks a new worker; it attaches into a free slot.
        again = wait_until(
            "the respawned worker attached",
            lambda: (lambda a: a if a and len(set(a) - set(first)) >= 1 else None)(attached(tmp_path, 5)),
            logs=logs,
        )
        newcomer = (set(again) - set(first)).pop()
        assert 1 <= again[newcomer] <= 6
        live = set(first) - {victim} | {newcomer}

        # The next `workers` signal reaches the 4 live workers, the new one too.
        server.get("/raise/17")
        reach2 = wait_until(
            "the second signal 17 in 4 workers",
            lambda: (lambda e: e if len(e) >= 8 else None)([pid for w, _, pid, _ in events(tmp_path) if w == "workers"]),
            logs=logs,
        )
        assert set(reach2[4:]) == live, (reach2, live)

        # The timer: once a second across the 4 workers, not once per
        # worker. Counted over 10 s after all 4 attached, once a tick later
        # than that window has been seen.
        wait_until(
            "a tick after the 10 s window",
            lambda: any(w == "tick" and at > t0 + 10.5 for w, _, _, at in events(tmp_path)),
            deadline=DEADLINE,
            logs=logs,
        )
        ticks = [at for w, _, _, at in events(tmp_path) if w == "tick" and t0 < at <= t0 + 10]
        print(
            f"gunicorn: ticks in the 10 s window: {len(ticks)}; workers reach: {len(reach1)}, then "
            f"{len(set(reach2[4:]))}; killed worker{first[victim]} (pid {victim}), "
            f"its successor (pid {newcomer}) attached as worker{again[newcomer]}"
        )
        assert 8 <= len(ticks) <= 12, ticks
        tick_workers = {pid for w, _, pid, _ in events(tmp_path) if w == "tick"}
        assert len(tick_workers) >= 2, "the timer ran in one worker only: it is not pooled"
        # The group stops first, its members still attached: they drain
        # with it (flare never signals them) and gunicorn goes on alone.
        summary = group.stop()
        n_ticks = sum(1 for w, *_ in events(tmp_path) if w == "tick")
        n_done = sum(1 for w, *_ in events(tmp_path) if w == "pool-done")
    finally:
        if server is not None:
            server.stop()
        group.kill()

    # The master's accounting: the same numbers.
    workers = procs(summary, "worker")
    handled = Counter()
    for p in workers:
        for num, n in (p.get("handled_by_num") or {}).items():
            handled[int(num)] += n
    print("summary counters:", summary["counters"])
    assert handled[17] == 8, handled
    assert handled[18] >= 40 and handled[18] >= n_done - 1, (handled, n_done)
    assert handled[0] >= n_ticks - 1, (handled, n_ticks)
    # The pool signal the killed worker was running was given again.
    assert summary["counters"]["redelivered"] >= 1, summary["counters"]


@pytest.mark.skipif(not have("gunicorn"), reason="gunicorn is not installed (.ci/run installs it)")
def test_gunicorn_workers_spool_jobs_for_the_groups_spooler(tmp_path):
    # The master imports the job module (its spooler is forked from it);
    # the web workers spool with uwsgidecorators' @spool, unmodified.
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    group = Group(tmp_path, "--attach-workers", "4", "--spooler", str(spool_dir), "attach_jobs")
    server = None
    n = 30
    try:
        server = Server(
            tmp_path, group, "gunicorn", "-w", "2", "-b", "127.0.0.1:PORT",
            "-c", str(APPS / "attach_gunicorn_conf.py"), "attach_wsgi:application",
        )
        logs = [server.log, group.err]
        web = wait_until("2 gunicorn workers attached", lambda: attached(tmp_path, 2), logs=logs)
        wait_until("HTTP served", lambda: _served(server), logs=logs)
        server.get(f"/spool/{n // 2}")
        server.get(f"/spool/{n // 2}")

        def runs():
            got = [(w, pid) for w, _, pid, _ in events(tmp_path) if w.startswith("job-")]
            return got if len(got) >= n else None

        ran = wait_until(f"{n} spool jobs run", runs, logs=logs)
        summary = group.stop()
    finally:
        if server is not None:
            server.stop()
        group.kill()
    # Each of the two requests' jobs ran once (no process was killed), in
    # the group's spooler, not in a web worker.
    per_job = Counter(w for w, *_ in events(tmp_path) if w.startswith("job-"))
    assert per_job == Counter({f"job-{i}": 2 for i in range(n // 2)}), per_job
    spoolers = {p["pid"] for p in procs(summary, "spooler")}
    runners = {pid for _, pid in ran}
    assert runners and runners <= spoolers, (runners, spoolers)
    assert not runners & set(web), (runners, web)
    # Nothing is left to run: no job file waits in the spool directory.
    left = [p.name for p in spool_dir.iterdir() if not p.name.startswith(".")]
    assert left == [], left


def check_two_workers(tmp_path, server_name, *args, env=None, uwsgiconf=False):
    """2 web workers: both attach; the timer runs once per period across
    them; a `workers` signal raised in a request reaches both."""
    group = Group(tmp_path, "--attach-workers", "4")
    server = None
    try:
        server = Server(tmp_path, group, server_name, *args, env=env)
        logs = [server.log, group.err]
        first = wait_until(f"2 {server_name} workers attached", lambda: attached(tmp_path, 2), logs=logs)
        assert len(set(first.values())) == 2 and 0 not in first.values(), first
        t0 = max(at for what, _, _, at in events(tmp_path) if what == "attached")
        wait_until("HTTP served", lambda: _served(server), logs=logs)
        server.get("/raise/17")
        reach = wait_until(
            "signal 17 in both workers",
            lambda: (lambda s: s if len(s) == 2 else None)({pid for w, _, pid, _ in events(tmp_path) if w == "workers"}),
            logs=logs,
        )
        assert reach == set(first), (reach, first)
        if uwsgiconf:
            # uwsgiconf's Signal(19).register_handler(target="workers").
            server.get("/raise/19")
            wait_until(
                "signal 19 (uwsgiconf) in both workers",
                lambda: {pid for w, _, pid, _ in events(tmp_path) if w == "uwsgiconf"} == set(first),
                logs=logs,
            )
        # 4 s counted once a later tick was seen: ~4 firings, not ~8.
        wait_until(
            "a tick after the 4 s window",
            lambda: any(w == "tick" and at > t0 + 4.5 for w, _, _, at in events(tmp_path)),
            logs=logs,
        )
        ticks = [at for w, _, _, at in events(tmp_path) if w == "tick" and t0 < at <= t0 + 4]
        print(f"{server_name}: ticks in the 4 s window: {len(ticks)}; workers reach: {len(reach)}")
        assert 3 <= len(ticks) <= 5, ticks
        summary = group.stop()
        # The web server serves on without the group.
        assert server.get("/").startswith("worker ")
    finally:
        if server is not None:
            server.stop()
        group.kill()
    handled = Counter()
    for p in procs(summary, "worker"):
        for num, n in (p.get("handled_by_num") or {}).items():
            handled[int(num)] += n
    assert handled[17] == 2, handled


def _served(server):
    try:
        return server.get("/").startswith("worker ")
    except OSError:
        return False


@pytest.mark.skipif(not have("uvicorn"), reason="uvicorn is not installed (.ci/run installs it)")
def test_uvicorn_workers_attach_at_import(tmp_path):
    check_two_workers(tmp_path, "uvicorn", "--workers", "2", "--port", "PORT", "attach_asgi:app")


@pytest.mark.skipif(not have("granian"), reason="granian is not installed (.ci/run installs it)")
def test_granian_workers_attach_in_lifespan_startup(tmp_path):
    check_two_workers(
        tmp_path, "granian", "--interface", "asgi", "--workers", "2", "--port", "PORT", "attach_asgi:app",
        env={"FLARE_ATTACH_AT": "lifespan"},
    )


@pytest.mark.skipif(not have("gunicorn"), reason="gunicorn is not installed (.ci/run installs it)")
def test_gunicorn_gthread_workers_join_the_group(tmp_path):
    # Without --preload: the app is imported in each worker, after the fork.
    check_two_workers(
        tmp_path, "gunicorn", "-k", "gthread", "--threads", "4", "-w", "2", "-b", "127.0.0.1:PORT",
        "-c", str(APPS / "attach_gunicorn_conf.py"), "attach_wsgi:application", uwsgiconf=True,
    )

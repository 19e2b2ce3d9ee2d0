"""Signal(n).send(remote=...) against a real uWSGI node and a flare node."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import APPS, DEADLINE, free_port, wait_for
from flare.runtime.signals import Signal

UWSGI = shutil.which("uwsgi", path=os.path.dirname(sys.executable))


@pytest.fixture
def uwsgi_node(tmp_path):
    assert UWSGI, "uwsgi (pip install pyuwsgi) must be next to this Python"
    addr = f"127.0.0.1:{free_port()}"
    log = tmp_path / "node.log"
    with open(log, "w") as out:
        p = subprocess.Popen(
            [UWSGI, "--master", "--processes", "1", "--socket", addr, "--die-on-term",
             "--wsgi-file", str(APPS / "uwsgi_node.py")],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_for(log, "NODE READY")
        wait_for(log, "spawned uWSGI worker 1")
        yield addr, log
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


@pytest.fixture
def flare_node(tmp_path):
    """A flare master listening for remote signals, only 17 allowed."""
    addr = f"127.0.0.1:{free_port()}"
    p = subprocess.Popen(
        [sys.executable, "-m", "flare", "--workers", "1", "--remote", addr, "--remote-allow", "17"],
        cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
    )
    try:
        end = time.monotonic() + DEADLINE
        while True:  # handshake: the listener answers
            try:
                Signal(17).send(remote=addr)
                break
            except OSError:
                assert time.monotonic() < end, "the flare node never answered"
                time.sleep(0.02)
        yield addr
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(DEADLINE)


def test_send_remote_runs_a_python_handler_on_a_uwsgi_node(uwsgi_node):
    addr, log = uwsgi_node
    Signal(17).send(remote=addr)
    wait_for(log, "NODE HANDLER ran 17")


def test_send_remote_to_nobody_is_an_oserror():
    with pytest.raises(OSError):
        Signal(17).send(remote=f"127.0.0.1:{free_port()}")


def test_a_rejected_number_is_a_valueerror(flare_node):
    Signal(17).send(remote=flare_node)
    with pytest.raises(ValueError, match="rejected signal 18"):
        Signal(18).send(remote=flare_node)

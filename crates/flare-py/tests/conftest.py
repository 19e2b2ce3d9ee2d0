import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

APPS = Path(__file__).parent / "apps"
DEADLINE = 60.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def run_flare(tmp_path):
    """Runs `python -m flare ARGS` to its end; returns its stdout lines."""

    def run(*args, env=None):
        full_env = dict(os.environ, FLARE_TEST_DIR=str(tmp_path), PYTHONPATH=str(APPS))
        full_env.update(env or {})
        p = subprocess.run(
            [sys.executable, "-m", "flare", *args],
            cwd=str(APPS),
            env=full_env,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
        )
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout.splitlines(), p.stderr

    return run


def wait_for(path, needle, deadline=DEADLINE):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if needle in Path(path).read_text(errors="replace"):
            return
        time.sleep(0.02)
    raise AssertionError(f"{needle!r} not in {path}:\n{Path(path).read_text(errors='replace')}")

"""The `flare` command the package installs, and the operations switches of
`python -m flare` (--metrics, FLARE_LOG_FORMAT=json)."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

import pytest

from conftest import DEADLINE, free_port

FLARE = Path(sys.executable).parent / "flare"


def flare(*args, check=True):
    p = subprocess.run([str(FLARE), *args], capture_output=True, text=True, timeout=DEADLINE)
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def test_the_flare_command_is_installed_with_every_subcommand():
    assert FLARE.exists(), f"no {FLARE}: the package's console script is missing"
    out = flare("--help").stdout
    for sub in ("demo", "signal", "stats", "ctl", "top"):
        assert sub in out, out
    assert flare("--version").stdout.strip() == f"flare {version('flare-signals')}"
    bad = flare("stats", f"127.0.0.1:{free_port()}", check=False)
    assert bad.returncode == 1 and "flare: error:" in bad.stderr, bad.stderr
    usage = flare("no-such-command", check=False)
    assert usage.returncode == 2 and "no-such-command" in usage.stderr, usage.stderr


@pytest.fixture
def group(tmp_path):
    """`python -m flare` with 2 workers, stats and metrics on TCP."""
    stats, metrics = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    p = subprocess.Popen(
        [sys.executable, "-m", "flare", "--workers", "2", "--stats", stats, "--metrics", metrics],
        cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(os.environ, FLARE_LOG_FORMAT="json"), start_new_session=True,
    )
    try:
        yield p, stats, metrics
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(DEADLINE)


def test_flare_stats_json_and_metrics_from_a_python_group(group):
    p, stats, metrics = group
    end = time.monotonic() + DEADLINE
    while True:  # handshake: the stats endpoint answers with both workers up
        r = flare("stats", stats, "--json", check=False)
        if r.returncode == 0:
            doc = json.loads(r.stdout)
            if all(w["pid"] for w in doc["workers"]):
                break
        assert time.monotonic() < end, r.stderr
        time.sleep(0.05)
    assert [w["id"] for w in doc["workers"]] == [1, 2]
    assert doc["pid"] == p.pid
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=DEADLINE) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = resp.read().decode()
    assert "\nuwsgi_workers 2\n" in text, text
    os.kill(p.pid, signal.SIGTERM)
    _, err = p.communicate(timeout=DEADLINE)
    assert p.returncode == 0, err
    lines = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    assert any("starting 2 workers" in l["message"] for l in lines), lines
    assert all(l["process"] and l["pid"] and l["level"] for l in lines), lines


def test_a_bad_log_format_is_a_clear_error(tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "flare", "--workers", "1"], cwd=str(tmp_path),
        env=dict(os.environ, FLARE_LOG_FORMAT="yaml"), capture_output=True, text=True,
        timeout=DEADLINE,
    )
    assert p.returncode != 0
    assert 'FLARE_LOG_FORMAT="yaml"' in p.stderr and "json" in p.stderr, p.stderr

"""Outside any flare group: `import uwsgidecorators` works, registrations
are recorded, send() raises a clear error or runs the handlers inline."""

import os
import subprocess
import sys

from conftest import APPS


def run(env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(APPS))
    env.pop("FLARE_ATTACH", None)
    env.update(env_extra or {})
    p = subprocess.run(
        [sys.executable, str(APPS / "outside_app.py")], env=env, capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return dict(line.split(" ", 1) for line in p.stdout.splitlines()), p


def test_registrations_are_recorded_and_send_says_what_to_do():
    out, p = run()
    # The .pth finder made `import uwsgi` flare's module without `import flare`.
    assert out["UWSGI"] == "flare.uwsgi True 0", p.stdout
    assert out["RECORDED"] == "[('register', 0), ('timer', 0), ('register', 17), ('register', 1), ('cron', 1)]", p.stdout
    assert out["REGISTERED"] == "True False"
    assert out["NOTINGROUP"] == "True"
    # A module with @spool imports; spooling says what to do.
    assert out["SPOOLNOTINGROUP"] == "True", p.stdout + p.stderr
    assert out["INLINE"] == "[('workers', 17)]"
    assert out["FIRED"] == "1 timer"
    assert out["BADTARGET"] == "True"
    assert out["NOPATH"] == "True"
    assert out["UNREACHABLE"] == "True", p.stdout + p.stderr
    assert out["WHOAMI"] == "None"


def test_flare_inline_runs_handlers_for_the_whole_process():
    out, p = run({"FLARE_INLINE": "1"})
    # send() ran the handler instead of raising.
    assert "NOTINGROUP" not in out, p.stdout
    assert out["INLINE"] == "[('workers', 17), ('workers', 17)]", p.stdout


def test_the_alias_can_be_turned_off():
    env = dict(os.environ, FLARE_UWSGI_ALIAS="0")
    env.pop("FLARE_ATTACH", None)
    p = subprocess.run([sys.executable, "-c", "import uwsgi"], env=env, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "No module named 'uwsgi'" in p.stderr, p.stderr

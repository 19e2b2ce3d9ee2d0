"""A real uWSGI config file starts the same group under
`python -m flare --ini`: programmed mule, farm, spooler, timers, a cron
command and a touch signal, checked by what the handlers report."""

from collections import Counter
from pathlib import Path

APPS = Path(__file__).parent / "apps"


def test_a_uwsgi_ini_starts_the_same_group(run_flare, tmp_path):
    touched = tmp_path / "touched"
    ini = tmp_path / "uwsgi.ini"
    (tmp_path / "spool").mkdir()  # uWSGI's --spooler wants an existing directory too
    ini.write_text(
        f"""[uwsgi]
master = true
processes = 2
http-socket = :0
mule = {APPS / 'mule_script.py'}
mule =
mule =
farm = pool:2,3
spooler = {tmp_path / 'spool'}
spooler-processes = 1
timer = 30 1
rbtimer = 31 1
cron = -1 -1 -1 -1 -1 touch {tmp_path / 'ran-cron'}
touch-signal = {touched} 32
harakiri = 30
mule-harakiri = 30
module = ini_app:application
"""
    )
    lines, err = run_flare("--ini", str(ini), "--summary")
    assert "DONE" in lines, "\n".join(lines) + err
    c = Counter(tuple(l.split()[1:3]) for l in lines if l.startswith("RAN "))
    # The mule script ran as __main__, in mule 1, not in the master.
    assert c[("script:__main__:True", "mule1")] >= 1, c
    assert {p for (w, p) in c if w == "timer"} <= {"worker1", "worker2"} and c[("timer", "worker1")] >= 1
    assert {p for (w, p) in c if w == "rbtimer"} == {"mule2"}
    assert {p for (w, p) in c if w == "touch"} == {"spooler1"}
    assert {p for (w, p) in c if w == "farm"} <= {"mule2", "mule3"}
    assert (tmp_path / "ran-cron").exists()
    # The option flare does not use is named in one warning line.
    warn = [l for l in err.splitlines() if "ignoring options" in l]
    assert len(warn) == 1 and "http-socket" in warn[0] and "mule" not in warn[0].split(":")[-1], warn

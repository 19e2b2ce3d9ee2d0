"""Each of uwsgiconf's 15 runtime modules imports under flare, and the
names with a meaning in flare work."""

import time

MODULES = (
    "alarms asynced caching control locking logging monitoring mules platform "
    "request rpc scheduling signals spooler websockets"
).split()


def test_every_uwsgiconf_runtime_module_imports(run_flare):
    before = int(time.time())
    lines, err = run_flare("--workers", "2", "uwsgiconf_imports:main")
    assert "DONE" in lines, "\n".join(lines) + err
    imported = {l.split()[1]: l.split(None, 2)[2] for l in lines if l.startswith("IMPORT ")}
    assert len(MODULES) == 15
    assert imported == {m: "ok" for m in MODULES}, imported
    facts = dict(l.split(" ", 1) for l in lines if l.split(" ", 1)[0] in
                 {"CORES", "HOSTNAME", "STARTED", "WORKER", "WORKERS", "MEM", "MICROS", "VERSION", "ALARM"})
    assert facts["CORES"] == "1"
    assert facts["HOSTNAME"] and facts["HOSTNAME"] != "b''"
    assert before - 5 <= int(facts["STARTED"]) <= int(time.time())
    assert facts["WORKER"] == "1" and facts["WORKERS"] == "2"
    assert facts["MEM"] == "True" and facts["MICROS"] == "True"
    assert facts["VERSION"] == "0.1.0"
    # Names without a meaning in flare say so, and what to use, when called.
    assert "uwsgi.alarm" in facts["ALARM"] and "logging" in facts["ALARM"], facts["ALARM"]
    assert "LOGGED via uwsgi.log" in err

"""uwsgidecorators' mule decorators and uWSGI's mule message functions,
unmodified, on flare: every message reaches its mule, bounds hold, and a
user harakiri writes the stack before the kill."""

import json
from collections import Counter


def runs(lines):
    c = Counter()
    for line in lines:
        if line.startswith("RAN "):
            _, what, proc = line.split()
            c[(what, proc)] += 1
    return c


def test_mule_decorators_messages_and_user_harakiri(run_flare):
    lines, err = run_flare(
        "--workers", "2", "--mules", "5", "--farm", "pool:2,3", "--summary", "mules_app:main",
    )
    out = "\n".join(lines) + err
    assert "DONE" in lines, out
    c = runs(lines)
    n = 40
    for i in range(n):
        # @mulefunc(1): mule 1 only, arguments and keywords intact.
        assert c[(f"mulefunc:{i}:True", "mule1")] == 1, out
        # @farm('pool'): one of the farm's mules, once.
        assert sum(c[(f"farm:{i}", m)] for m in ("mule2", "mule3")) == 1, out
        # @mulemsg(4): mule 4 only.
        assert c[(f"mulemsg:{i}", "mule4")] == 1, out
    assert c[("rpc:3", "worker1")] == 1
    # flare.runtime.mules: Mule(1).offload() and Farm.get_farms().
    assert all(c[(f"offload:{i}", "mule1")] == 1 for i in range(5)), out
    assert c[("farms:pool=2+3", "worker1")] == 1, out
    too_large = [w for (w, _) in c if w.startswith("too-large:")]
    assert too_large and "65537_bytes" in too_large[0] and "65536" in too_large[0], too_large
    full = [int(w.split(":")[1]) for (w, _) in c if w.startswith("full-after:")]
    assert full and full[0] > 0
    held = sorted(int(w.split(":")[1]) for (w, p) in c if w.startswith("held:") and p == "mule5")
    # Everything queued while mule 5 was not reading, plus the sender that
    # waited: none dropped.
    assert held == list(range(full[0] + 1)), held
    assert c[("sender-waiting:True", "worker1")] == 1
    assert any(w.startswith("acks:") and w.endswith(":True") for (w, _) in c), out
    # signal_received() inside a handler is the signal being handled.
    assert c[("received:61", "worker2")] == 2, out
    # @harakiri(1): the stack of the hung handler reached the log, then
    # the kill; the respawned worker 2 got signal 61 again.
    assert "in hang" in err and "mules_app.py" in err, err
    summary = json.loads(next(l for l in lines if l.startswith("SUMMARY "))[8:])
    assert summary["counters"]["timeouts"] == 1, summary["counters"]
    assert c[("after-respawn", "worker2")] == 1
    assert c[("harakiri-over", "worker1")] == 1

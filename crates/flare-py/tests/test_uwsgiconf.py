"""uwsgiconf, installed from PyPI with its stub switched off, on flare."""

import json


def test_uwsgiconf_signal_scenario_passes_in_a_real_flare_worker(run_flare):
    lines, err = run_flare("--workers", "1", "--summary", "uwsgiconf_scenario:main")
    assert "SCENARIO OK" in lines, "\n".join(lines) + err
    summary = json.loads(next(l for l in lines if l.startswith("SUMMARY "))[8:])
    assert summary["counters"]["handled"] == 2

"""Refusals from the master keep their Python exception types and say why."""


def raised(lines, what):
    line = next((l for l in lines if l.startswith(f"RAISED {what} ")), None)
    assert line, "\n".join(lines)
    return line


def test_refusals_over_the_channel_are_the_documented_exceptions(run_flare):
    lines, err = run_flare("--workers", "1", "errors_app:main")
    assert not any(l.startswith("NOT RAISED") for l in lines), "\n".join(lines) + err
    conflict = raised(lines, "conflict")
    assert "ValueError" in conflict and "already registered by worker1" in conflict, conflict
    bad = raised(lines, "bad-target")
    assert "ValueError" in bad and "farm_nope" in bad, bad
    none = raised(lines, "no-number")
    assert "NoSignalAvailable" in none and "all 256" in none, none

"""An app using uwsgidecorators and uwsgiconf scheduling runs under
`python -m flare`; every handler runs in the right processes."""

from collections import Counter


def runs(lines):
    c = Counter()
    for line in lines:
        if line.startswith("RAN "):
            _, what, proc = line.split()
            c[(what, proc)] += 1
    return c


def where(c, what):
    return {proc: n for (w, proc), n in c.items() if w == what}


def test_decorated_handlers_run_in_their_targets(run_flare):
    lines, err = run_flare(
        "--workers", "3", "--mules", "2", "--farm", "reports:1,2", "--spoolers", "1",
        "decorators_app:main",
    )
    assert "DONE" in lines, "\n".join(lines) + err
    c = runs(lines)
    workers = {"worker1", "worker2", "worker3"}
    mules = {"mule1", "mule2"}
    # @timer(1, target='workers'): every worker, nobody else.
    assert set(where(c, "timer")) == workers, where(c, "timer")
    # @rbtimer(1, target='mule1'): mule 1 only.
    assert set(where(c, "rbtimer")) == {"mule1"}
    # @cron(every minute, target='mules'): fires in the minute it is added.
    assert set(where(c, "cron")) == mules
    # @filemon(path, target='spooler'): the write in worker 1 (its create,
    # write and close events coalesce into a leading signal and at most one
    # trailing one).
    fm = where(c, "filemon")
    assert set(fm) == {"spooler1"} and 1 <= fm["spooler1"] <= 2, fm
    # @signal(40, target='mules'): both mules, both times.
    assert where(c, "mules") == {"mule1": 2, "mule2": 2}
    # @signal(41, target='farm_reports'): the farm's mules, 4 in all.
    farm = where(c, "farm")
    assert set(farm) <= mules and sum(farm.values()) == 4, farm
    # uwsgiconf register_timer_ms(300, target='mule2'): mule 2 only, often.
    ms = where(c, "mstimer")
    assert set(ms) == {"mule2"} and ms["mule2"] >= 5, ms
    # Registered in worker 1 at run time for 'workers': only worker 1.
    assert where(c, "runtime") == {"worker1": 3}


def test_uwsgidecorators_spooler_and_lock_do_their_jobs(run_flare, tmp_path):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    lines, err = run_flare(
        "--workers", "3", "--spooler", str(spool_dir), "--spooler-processes", "2", "--locks", "1",
        "spool_app:main",
    )
    runs = (tmp_path / "runs.txt").read_text().splitlines()
    c = Counter(line.split()[0] for line in runs)
    # @spool: each job once, in a spooler, with uWSGI's spooler_task_name.
    assert sorted(line for line in runs if line.startswith("spool ")) == [
        "spool 0 True True", "spool 1 True True", "spool 2 True True"], runs
    # @spool(pass_arguments=True): the pickled arguments come back.
    assert "args 1 [2, 'two'] {'three': 3}" in runs, runs
    # @spoolforever: SPOOL_RETRY, so it runs again (every 0.2 s here).
    assert c["forever"] >= 3, runs
    # @lock: 15 critical sections in 3 workers, never two at once.
    assert c["locked"] == 15 and c["overlap"] == 0, runs
    # A job that is not a dict of bytes/str is a TypeError naming the key.
    assert "typeerror True" in runs and "jobs_listed True" in runs, runs

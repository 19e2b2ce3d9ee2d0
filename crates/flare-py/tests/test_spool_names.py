"""uwsgi.spooler_pid(), spooler_pids(), spooler_get_task() as uWSGI has
them, and flare's uwsgi.spool_many()."""


def test_spooler_pids_get_task_and_spool_many(run_flare, tmp_path):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    lines, err = run_flare(
        "--workers", "1", "--spooler", str(spool_dir), "--spooler-processes", "2",
        "spool_names_app:main",
    )
    runs = (tmp_path / "runs.txt").read_text().splitlines()
    # Two spoolers, both running, the first one's pid is spooler_pid().
    assert "pids 2 True True True" in runs, runs
    # The held-back job as uWSGI's spooler_get_task returns it: its bytes
    # keys, and str keys for the path given and the body.
    assert (
        "task [\"'body'\", \"'spooler_task_name'\", \"b'at'\", \"b'k'\"] True b'later' b'xyz'" in runs
    ), runs
    assert "task_bytes_path b'later'" in runs, runs
    assert "missing None" in runs and "junk None" in runs, runs
    # A batch with a bad job writes nothing; a good one spools both.
    assert "bad_batch True" in runs and "batch 2 True" in runs, runs
    # Each job ran once, in a spooler listed by spooler_pids(), which
    # agrees with spooler_pid() there too.
    ran = sorted(line for line in runs if line.startswith("ran "))
    assert ran == ["ran one True True B1", "ran two True True -"], runs
    # The cancelled job did not run, and nothing is left.
    assert not [p for p in spool_dir.iterdir() if not p.name.startswith(".")]

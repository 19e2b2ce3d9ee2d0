"""uWSGI's way of starting mules: `--mule FILE.py` runs the script as
__main__ in its mule only; a `module:callable` entry is imported only in
the processes that run it."""

from collections import Counter


def test_programmed_mule_and_an_entry_imported_only_in_its_mule(run_flare):
    lines, err = run_flare(
        "--workers", "1", "--mule", "programmed_mule.py", "--mules", "1", "--mule-entry", "lazy_mule:main",
    )
    assert "DONE" in lines, "\n".join(lines) + err
    c = Counter(tuple(l.split()[1:3]) for l in lines if l.startswith("RAN "))
    assert c[("script:__main__", "mule1")] == 1, c
    # The entry's module: imported and run in mule 2 only (not in the
    # master, not in the script's mule).
    assert {p for (w, p) in c if w == "imported"} == {"mule2"}, c
    assert c[("entry", "mule2")] == 1, c

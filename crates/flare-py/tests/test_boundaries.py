"""What a Python user sees at the edges: log lines, failing handlers
counted, bad handlers refused at registration, and stdout that survives
fork and exit."""

import json
import operator

import pytest

import flare.testing
from flare import uwsgi as compat
from flare.runtime.signals import Signal


def summary_of(lines):
    return next(json.loads(l[len("SUMMARY "):]) for l in lines if l.startswith("SUMMARY "))


def test_log_lines_follow_flare_log_and_raising_handlers_are_counted(run_flare):
    lines, err = run_flare("--summary", "boundaries_app:raising", env={"FLARE_LOG": "info"})
    # The master's log lines, on stderr, as the flare command writes them.
    assert "starting 1 worker" in err, err
    assert "exiting" in err, err
    # Each raise printed its traceback and was counted as an exception.
    assert err.count("ValueError: handler of 7 fails on purpose") == 3, err
    worker = summary_of(lines)["processes"][0]
    assert worker["exceptions"] == 3, worker
    assert worker["handled_by_num"]["7"] == 3, worker


def test_flare_log_filters_the_log(run_flare):
    lines, err = run_flare("boundaries_app:raising", env={"FLARE_LOG": "error"})
    assert "starting 1 worker" not in err, err


def test_stdout_is_flushed_around_fork_and_at_child_exit(run_flare):
    # Block-buffered stdout, as under a process manager.
    lines, err = run_flare("boundaries_app:two_lives", env={"PYTHONUNBUFFERED": ""})
    # The master's buffered line is written once, not again by each child.
    assert lines.count("MASTER-BUFFERED") == 1, lines
    # The worker's first life ended by returning: its line is not lost.
    lives = [l for l in lines if l.startswith("WORKER-LIFE ")]
    assert len(lives) == 2 and lives[0] != lives[1], lines + [err]


def not_one_argument():
    pass


def two_arguments(a, b):
    pass


@pytest.mark.parametrize(
    "register",
    [
        lambda f: Signal(9).register_handler()(f),
        lambda f: compat.register_signal(9, "", f),
    ],
    ids=["flare.runtime.signals", "uwsgi.register_signal"],
)
def test_handlers_that_cannot_take_the_signal_number_are_refused(register):
    with pytest.raises(TypeError, match="must be a callable"):
        register(42)
    with pytest.raises(TypeError, match=r"not_one_argument\(\) cannot be called with one argument"):
        register(not_one_argument)
    with pytest.raises(TypeError, match="two_arguments"):
        register(two_arguments)
    # Callable with one argument (or whose signature cannot be read): the
    # check lets it through; outside a group the registration is recorded
    # (docs/attach.md), to be replayed when the process attaches.
    for ok in (lambda num: None, lambda *args: None, print, operator.itemgetter(0)):
        with flare.testing.isolated():
            register(ok)
            last = flare.testing.registrations()[-1]
            assert (last.kind, last.num, last.args[1]) == ("register", 9, ok)

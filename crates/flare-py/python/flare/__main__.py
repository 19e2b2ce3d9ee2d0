"""``python -m flare [options] app[:callable]``: run an app in a flare group.

The master imports the app module first (its registrations are the
master's, inherited by every child, as under uWSGI), then forks the
children; each runs its role's entry or serves signals.
"""

import argparse
import json
import sys

import flare


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m flare", description=__doc__.splitlines()[0])
    p.add_argument("app", nargs="?", help="module or module:callable (the workers' entry)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--mules", type=int, default=0)
    p.add_argument("--farm", action="append", default=[], metavar="NAME:1,2", help="a farm of mules")
    p.add_argument("--spoolers", type=int, default=0)
    p.add_argument("--remote", metavar="ADDR", help="listen for remote signals (uwsgi protocol)")
    p.add_argument("--remote-allow", metavar="N,N", help="signal numbers remote nodes may raise")
    p.add_argument("--stats", metavar="ADDR", help="serve the stats document")
    p.add_argument("--control", metavar="PATH", help="take control commands on this Unix socket")
    p.add_argument("--harakiri", type=float, metavar="SECS", help="handler time limit")
    p.add_argument("--stall", type=float, metavar="SECS", help="no-progress limit with work waiting (default 30; 0: off)")
    p.add_argument(
        "--busy-poll-us",
        type=int,
        metavar="US",
        help="after activity, look for more this long before sleeping (default 50; 0: off)",
    )
    p.add_argument("--mule-entry", metavar="NAME", help="the mules' entry (in the app module, or module:callable)")
    p.add_argument("--spooler-entry", metavar="NAME", help="the spoolers' entry")
    p.add_argument("--summary", action="store_true", help="print the run's summary as JSON at the end")
    a = p.parse_args(argv)
    allow = [int(n) for n in a.remote_allow.split(",")] if a.remote_allow else None
    summary = flare.run(
        a.app,
        mule=a.mule_entry,
        spooler=a.spooler_entry,
        workers=a.workers,
        mules=a.mules,
        farms=a.farm,
        spoolers=a.spoolers,
        remote=a.remote,
        remote_allow=allow,
        stats=a.stats,
        control=a.control,
        harakiri=a.harakiri,
        stall=a.stall,
        busy_poll=None if a.busy_poll_us is None else a.busy_poll_us / 1e6,
    )
    if a.summary:
        print("SUMMARY " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

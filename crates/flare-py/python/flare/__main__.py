"""``python -m flare [options] app[:callable]``: run an app in a flare group.

The master imports the app module first (its registrations are the
master's, inherited by every child, as under uWSGI), then forks the
children; each runs its role's entry or serves signals.
"""

import argparse
import json
import sys

import flare


def _spooler_options(p: argparse.ArgumentParser) -> None:
    """uWSGI's spooler and lock options."""
    p.add_argument(
        "--spooler", action="append", default=[], metavar="DIR", help="a spool directory (repeatable), as uWSGI's"
    )
    p.add_argument("--spooler-processes", type=int, metavar="N", help="spoolers per spool directory (default 1)")
    p.add_argument(
        "--spooler-frequency", type=float, metavar="SECS", help="how often to look again at jobs to retry (default 30)"
    )
    p.add_argument(
        "--spooler-no-fsync",
        action="store_true",
        help="spool() without fsync: survives process deaths, not machine crashes (as uWSGI)",
    )
    p.add_argument(
        "--spooler-no-journal",
        action="store_true",
        help="a file per job in uWSGI's format (for a directory shared with uWSGI), not the journal",
    )
    p.add_argument("--locks", type=int, default=0, metavar="N", help="user locks 1..N besides lock 0")


def _spooler_values(a: argparse.Namespace) -> dict:
    return {
        "spooler_dirs": a.spooler,
        "spooler_processes": a.spooler_processes,
        "spooler_frequency": a.spooler_frequency,
        "locks": a.locks,
        "spooler_fsync": not a.spooler_no_fsync,
        "spooler_journal": not a.spooler_no_journal,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m flare", description=__doc__.splitlines()[0])
    p.add_argument("app", nargs="?", help="module or module:callable (the workers' entry)")
    p.add_argument("--workers", type=int, help="forked workers (default 1; 0 with --attach)")
    p.add_argument("--mules", type=int, default=0)
    p.add_argument("--farm", action="append", default=[], metavar="NAME:1,2", help="a farm of mules")
    p.add_argument("--spoolers", type=int, default=0)
    p.add_argument("--remote", metavar="ADDR", help="listen for remote signals (uwsgi protocol)")
    p.add_argument("--remote-allow", metavar="N,N", help="signal numbers remote nodes may raise")
    p.add_argument("--stats", metavar="ADDR", help="serve the stats document")
    p.add_argument(
        "--attach",
        metavar="PATH",
        help="take attached workers (gunicorn, uvicorn, granian, any docs/attach.md client) on this Unix socket",
    )
    p.add_argument("--attach-workers", type=int, metavar="N", help="attach slots (default 8)")
    p.add_argument(
        "--attach-hold",
        type=float,
        metavar="SECS",
        help="how long deliveries for a slot whose process left wait for the next one (default 30)",
    )
    p.add_argument("--control", metavar="PATH", help="take control commands on this Unix socket")
    p.add_argument("--metrics", metavar="ADDR", help="serve Prometheus metrics at http://ADDR/metrics")
    p.add_argument(
        "--allow-uid",
        action="append",
        default=[],
        metavar="UID[,UID]",
        help="users who may use the Unix-socket endpoints besides root and this user",
    )
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
    # ---- uWSGI's way of starting things ----
    p.add_argument(
        "--mule", action="append", nargs="?", const="", default=[], metavar="FILE.py",
        help="add a mule running FILE.py as __main__ (uWSGI --mule=FILE.py; bare: a plain mule); repeatable",
    )
    p.add_argument("--ini", metavar="FILE", help="read the [uwsgi] section of a uWSGI ini file")
    p.add_argument("--yaml", metavar="FILE", help="read the uwsgi: mapping of a uWSGI YAML file (needs PyYAML)")
    p.add_argument("--mule-msg-size", type=int, metavar="BYTES", help="largest mule message (default 65536)")
    _fleet_options(p)
    _spooler_options(p)
    a = p.parse_args(argv)
    if a.ini or a.yaml:
        return _from_uwsgi_config(a)
    allow = [int(n) for n in a.remote_allow.split(",")] if a.remote_allow else None
    if a.workers is None:
        # Attached web workers do the work: no forked workers unless asked.
        a.workers = 0 if a.attach else 1
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
        metrics=a.metrics,
        attach=a.attach,
        attach_workers=a.attach_workers,
        attach_hold=a.attach_hold,
        harakiri=a.harakiri,
        stall=a.stall,
        busy_poll=None if a.busy_poll_us is None else a.busy_poll_us / 1e6,
        allow_uids=[int(u) for arg in a.allow_uid for u in arg.split(",")],
        mule_scripts=a.mule,
        mule_msg_size=a.mule_msg_size,
        **_spooler_values(a),
        **_fleet_values(a),
    )
    if a.summary:
        print("SUMMARY " + json.dumps(summary), flush=True)
    return 0


def _fleet_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fleet (docs/fleet.md)")
    g.add_argument("--fleet", metavar="URL", help="join a fleet on this NATS server (nats://host:4222)")
    g.add_argument("--fleet-name", metavar="NAME", help="the fleet's name (default flare)")
    g.add_argument("--node", metavar="NAME", help="this node's name (default: the host name)")
    g.add_argument("--fleet-allow", metavar="N,N", help="signal numbers this node accepts from the fleet (default all)")
    g.add_argument("--nats-creds", metavar="FILE", help="NATS credentials file")
    g.add_argument("--nats-user", metavar="USER")
    g.add_argument("--nats-password", metavar="PASSWORD")
    g.add_argument("--nats-token", metavar="TOKEN")
    g.add_argument("--nats-tls-ca", metavar="FILE", help="CA certificates (PEM) for the server")
    g.add_argument("--nats-tls-cert", metavar="FILE", help="client certificate (PEM)")
    g.add_argument("--nats-tls-key", metavar="FILE", help="client key (PEM)")
    g.add_argument("--nats-tls", action="store_true", help="require TLS")


def _fleet_values(a) -> dict:
    if not getattr(a, "fleet", None):
        return {}
    opts = {
        "url": a.fleet,
        "creds": a.nats_creds,
        "user": a.nats_user,
        "password": a.nats_password,
        "token": a.nats_token,
        "tls_ca": a.nats_tls_ca,
        "tls_cert": a.nats_tls_cert,
        "tls_key": a.nats_tls_key,
        "tls": a.nats_tls,
    }
    return {
        "fleet": opts,
        "fleet_name": a.fleet_name,
        "node": a.node,
        "fleet_allow": [int(n) for n in a.fleet_allow.split(",")] if a.fleet_allow else None,
    }


def _from_uwsgi_config(a) -> int:
    """Runs the group a uWSGI config file describes (see flare.uwsgi_ini)."""
    import inspect
    import logging

    from . import uwsgi_ini

    opts = uwsgi_ini.read_ini(a.ini) if a.ini else uwsgi_ini.read_yaml(a.yaml)
    run, steps, ignored = uwsgi_ini.to_run_options(opts)
    log = logging.getLogger("flare")
    if ignored:
        print(f"flare: {a.ini or a.yaml}: ignoring options flare does not use: {', '.join(ignored)}", file=sys.stderr)
    dirs = run.pop("spooler_dirs", None)
    if dirs and "spooler_dirs" in inspect.signature(flare.Group).parameters:
        run["spooler_dirs"] = dirs
    elif dirs:
        print(
            f"flare: spooler = {', '.join(dirs)}: this flare has no spool directories; "
            f"{run['spoolers']} spooler process(es) start and serve signals",
            file=sys.stderr,
        )
    app = run.pop("app")
    workers = run.get("workers", 1)
    target = "worker" if workers else "mule"
    log.debug("uWSGI config read: %s", run)
    summary = flare.run(
        app,
        import_only=True,
        setup=lambda: uwsgi_ini.apply_steps(steps, target),
        **run,
    )
    if a.summary:
        print("SUMMARY " + json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

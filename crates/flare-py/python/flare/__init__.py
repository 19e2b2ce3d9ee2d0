"""flare: pre-forked process groups that talk through numbered signals.

uWSGI's signal framework, rebuilt in Rust, for Python code written for
uWSGI: ``uwsgiconf.runtime.signals``, ``uwsgiconf.runtime.scheduling`` and
``uwsgidecorators`` run unmodified (inside flare processes ``import uwsgi``
gives flare's compatibility module), and ``flare.runtime.signals`` offers
the same names on flare directly.

Run an app::

    python -m flare --workers 4 --mules 2 --farm reports:1,2 app:main

or from Python::

    import flare
    flare.run("app:main", workers=4, mules=2, farms={"reports": [1, 2]})
"""

from __future__ import annotations

import faulthandler
import importlib
import json
import os
import signal as _signal
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from . import _core, _flare
from ._core import NotInGroup
from ._flare import NoSignalAvailable

__version__ = "0.1.0"

__all__ = [
    "Group",
    "run",
    "whoami",
    "stop",
    "serve_forever",
    "NoSignalAvailable",
    "NotInGroup",
    "attach",
    "at_fork",
    "__version__",
]

Entry = Optional[Callable[[], Any]]

_post_fork: List[Callable[[], Any]] = []

#: Attach slots when ``attach`` is given without ``attach_workers``.
_DEFAULT_ATTACH_WORKERS = 8

if os.environ.get("FLARE_ATTACH"):
    # This process is to join a group: ``import uwsgi`` is flare's, even
    # where a uwsgi module (uwsgiconf's stub, ...) could be found.
    from . import uwsgi as _compat

    sys.modules["uwsgi"] = _compat


def whoami() -> Optional[Tuple[str, int, int]]:
    """``(role, id, pid)`` of this process (role: master, worker, mule,
    spooler), or None outside a flare group."""
    return _core.whoami()


def attach(path: Optional[str] = None) -> Tuple[str, int, int]:
    """Joins the flare group whose master listens at ``path`` (its
    ``--attach`` socket; default: the ``FLARE_ATTACH`` environment variable)
    as a worker, and returns ``(role, id, pid)``: this process is
    ``worker<id>`` from now on (``uwsgi.worker_id()``). What was registered
    before (signals, timers, cron entries, file monitors: at import, maybe
    in a parent process before it forked) is registered now, in order;
    handlers run on flare's dispatcher thread. Call it in the process that
    is to be the member, after any fork: gunicorn's ``post_worker_init``
    (``from flare.gunicorn import post_worker_init`` in gunicorn.conf.py),
    after the app's registrations (end of its import, or the lifespan
    startup) under uvicorn and granian. A second call in the same process
    returns the same answer; a process forked from an attached one is not
    a member (its ``send()`` raises ``NotInGroup``). Raises
    ``ConnectionError`` when nothing listens at ``path`` or the master
    refuses (every slot taken, a uid it does not admit: its reason is in
    the message). See docs/attach.md."""
    return _core.attach(path)


def stop() -> None:
    """Asks the master to shut the group down gracefully (uWSGI
    ``uwsgi.stop()``): queued signals are handled first. From a child."""
    _flare.stop()


def serve_forever() -> None:
    """Blocks for good, letting this process serve signals: for an entry
    function with nothing else to do."""
    _flare.serve_forever()


def at_fork(func: Callable[[], Any]) -> Callable[[], Any]:
    """Registers ``func`` to run in every child right after it is forked
    (before its entry), as uWSGI's ``post_fork_hook``. Usable as a decorator."""
    _post_fork.append(func)
    return func


def _farm_list(farms: Union[None, Dict[str, Iterable[int]], Iterable[str]]) -> List[Tuple[str, List[int]]]:
    if farms is None:
        return []
    if isinstance(farms, dict):
        return [(name, [int(m) for m in mules]) for name, mules in farms.items()]
    out = []
    for spec in farms:
        name, sep, ids = spec.partition(":")
        if not sep or not name or not ids:
            raise ValueError(f"invalid farm {spec!r}: use NAME:1,2")
        out.append((name, [int(m) for m in ids.split(",")]))
    return out


class Group:
    """A process group. Build it, register handlers (with flare's, uwsgiconf's,
    uWSGI's or uwsgidecorators' API: they are the master's, inherited by every
    child), then :meth:`run` it.

    Building it makes ``import uwsgi`` give flare's compatibility module in
    this process and in every child. ``harakiri`` (every role),
    ``drain_timeout`` and ``busy_poll`` are in seconds (``busy_poll``: after
    activity, how long processes look for more work before they sleep;
    default 50 µs, 0 turns it off). ``stall`` (seconds, every role, default
    30, 0 turns it off): a process that makes no progress that long while
    work waits for it is killed and respawned with its queue.
    ``allow_uids``: users who may use the
    Unix-socket endpoints (remote, stats, control) besides root and the
    master's own user. ``metrics``: serve Prometheus metrics at
    ``GET /metrics`` on this address (docs/stats.md).

    ``attach``: a Unix socket (a path, or ``@name`` for an abstract one)
    where processes flare did not fork (gunicorn, uvicorn, granian workers,
    any program speaking docs/attach.md) join as workers; ``attach_workers``
    (default 8) is how many may be attached at once, numbered after the
    forked workers; ``attach_hold`` (seconds, default 30) is how long
    deliveries for a slot whose process left wait for the next one.

    ``spooler_dirs`` are spool directories (uWSGI ``--spooler``), each
    served by ``spooler_processes`` spoolers (default 1) that run
    ``uwsgi.spooler`` for each job; ``spooler_frequency`` (seconds, default
    30) is how often they look again at jobs to retry. ``locks`` adds user
    locks 1..N to lock 0 (uWSGI ``--locks``). ``spooler_fsync=False`` makes
    ``spool()`` skip its fsyncs: jobs then survive any process's death but
    not a machine crash (as in uWSGI), and spooling is much faster.
    ``spooler_journal=False`` gives every job a file of its own in uWSGI's
    format (for a directory shared with uWSGI spoolers); by default plain
    jobs (no ``at``, no ``priority``, at most 64 KiB) are appended to the
    directory's journal, which runs many times as many jobs per second.
    """

    def __init__(
        self,
        *,
        workers: int = 1,
        mules: int = 0,
        farms: Union[None, Dict[str, Iterable[int]], Iterable[str]] = None,
        spoolers: int = 0,
        remote: Optional[str] = None,
        remote_allow: Optional[Iterable[int]] = None,
        stats: Optional[str] = None,
        control: Optional[str] = None,
        metrics: Optional[str] = None,
        harakiri: Optional[float] = None,
        drain_timeout: Optional[float] = None,
        busy_poll: Optional[float] = None,
        worker_harakiri: Optional[float] = None,
        mule_harakiri: Optional[float] = None,
        spooler_harakiri: Optional[float] = None,
        mule_msg_size: Optional[int] = None,
        allow_uids: Iterable[int] = (),
        spooler_dirs: Iterable[str] = (),
        spooler_processes: Optional[int] = None,
        spooler_frequency: Optional[float] = None,
        locks: int = 0,
        spooler_fsync: bool = True,
        spooler_journal: bool = True,
        stall: Optional[float] = None,
        fleet: Union[None, str, Dict[str, Any]] = None,
        fleet_name: Optional[str] = None,
        node: Optional[str] = None,
        fleet_allow: Optional[Iterable[int]] = None,
        attach: Optional[str] = None,
        attach_workers: Optional[int] = None,
        attach_hold: Optional[float] = None,
    ) -> None:
        farm_list = _farm_list(farms)
        fleet_opts = _fleet_options(fleet, fleet_name, node, fleet_allow)
        dirs = [os.fspath(d) for d in spooler_dirs]
        attach_options = {"attach": attach, "attach_workers": attach_workers, "attach_hold": attach_hold}
        self._native = _flare.Group(
            workers=workers,
            mules=mules,
            farms=farm_list,
            spoolers=spoolers,
            remote=remote,
            remote_allow=list(remote_allow) if remote_allow is not None else None,
            stats=stats,
            control=control,
            metrics=metrics,
            harakiri=harakiri,
            drain_timeout=drain_timeout,
            busy_poll=busy_poll,
            # Sent to a child past its time limit, before the SIGKILL: every
            # child dumps its threads' stacks on it (see _child).
            stack_dump_signal=int(_signal.SIGURG),
            role_harakiri=(worker_harakiri, mule_harakiri, spooler_harakiri),
            mule_msg_size=mule_msg_size,
            allow_uids=list(allow_uids),
            spooler_dirs=dirs,
            spooler_processes=spooler_processes,
            spooler_frequency=spooler_frequency,
            locks=locks,
            spooler_fsync=spooler_fsync,
            spooler_journal=spooler_journal,
            stall=stall,
            fleet=fleet_opts,
            # Only when asked for: a group without an attach socket builds
            # exactly as before.
            **{k: v for k, v in attach_options.items() if v is not None},
        )
        _core.group_built()
        from . import uwsgi as compat

        compat._configure(
            master_pid=os.getpid(),
            workers=workers + (attach_workers or (_DEFAULT_ATTACH_WORKERS if attach else 0)),
            mules=mules,
            farms=farm_list,
            spoolers=spoolers,
            spooler_dirs=dirs,
            locks=locks,
        )
        sys.modules["uwsgi"] = compat

    @property
    def addresses(self) -> Tuple[Optional[str], Optional[str], Optional[str]]:
        """Where remote signals, stats and control listen (None when off)."""
        return self._native.addresses()

    def run(self, worker: Entry = None, mule: Entry = None, spooler: Entry = None) -> Dict[str, Any]:
        """Forks every child and supervises the group until SIGTERM, Ctrl-C or
        :func:`stop`; returns the summary. Each child runs its role's entry
        callable, or serves signals when there is none; a child whose entry
        returns or raises is forked again."""
        self._native.set_entries(_child(worker), _child(mule), _child(spooler))
        return json.loads(self._native.run())


def _child(entry: Entry) -> Callable[[], Any]:
    def start() -> Any:
        # A child past its time limit gets SIGURG before the SIGKILL: the
        # stack of every thread goes to the log, showing where it hung.
        faulthandler.register(_signal.SIGURG, all_threads=True)
        compat = sys.modules.get("uwsgi")
        hook = getattr(compat, "post_fork_hook", None)
        for f in list(_post_fork) + ([hook] if callable(hook) else []):
            f()
        if entry is None:
            return _serve()
        return entry()

    return start


def _serve() -> None:
    """What a child without an entry of its own does: serve signals; a mule
    also reads its messages once a ``mule_msg_hook`` is set (@mulefunc,
    uwsgiconf's ``Mule.offload``), as in uWSGI (otherwise they wait in its
    mailbox)."""
    compat = sys.modules.get("uwsgi")
    me = _core.whoami()
    if me and me[0] == "mule" and callable(getattr(compat, "mule_msg_hook", None)):
        compat._mule_loop()
    _flare.serve_forever()


def _resolve(module: Any, ref: Union[None, str, Callable[[], Any]]) -> Entry:
    """An entry given as a callable, ``name`` (in the app module) or
    ``module:name``. Another module is imported only in the child that runs
    the entry, never in the master (its import may start a loop)."""
    if ref is None or callable(ref):
        return ref
    mod_name, sep, attr = ref.rpartition(":")
    if sep and (module is None or mod_name != module.__name__):
        if not mod_name or not attr:
            raise ValueError(f"entry {ref!r}: give module:callable")

        def lazy() -> Any:
            try:
                func = getattr(importlib.import_module(mod_name), attr)
            except AttributeError:
                raise ValueError(f"entry {ref!r}: {mod_name} has no {attr!r}") from None
            return func()

        return lazy
    if module is None:
        raise ValueError(f"entry {ref!r}: give module:callable")
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValueError(f"entry {ref!r}: {module.__name__} has no {attr!r}") from None


def _mule_scripts(scripts: List[str], entry: Entry) -> Entry:
    """uWSGI's programmed mules (``--mule=FILE.py``): mule N runs the N-th
    script as ``__main__`` (runpy), in that mule only; other mules run
    ``entry`` or serve signals."""
    if not scripts:
        return entry
    for path in scripts:
        if path and not os.path.isfile(path):
            raise ValueError(f"mule script {path!r} does not exist")

    def mule() -> Any:
        import runpy

        me = _core.whoami()
        index = (me[1] if me else 0) - 1
        script = scripts[index] if 0 <= index < len(scripts) else ""
        if script:
            sys.argv = [script]
            runpy.run_path(script, run_name="__main__")
            return None
        return entry() if entry is not None else _serve()

    return mule


def _fleet_options(
    fleet: Union[None, str, Dict[str, Any]],
    name: Optional[str],
    node: Optional[str],
    allow: Optional[Iterable[int]],
) -> Optional[Dict[str, Any]]:
    """The fleet settings for the native Group: ``fleet`` is the NATS URL,
    or a dict with ``url`` and any of ``name``, ``node``, ``allow``,
    ``creds``, ``user``, ``password``, ``token``, ``tls_ca``, ``tls_cert``,
    ``tls_key``, ``tls``, ``reply_timeout`` (docs/fleet.md)."""
    if fleet is None:
        return None
    opts: Dict[str, Any] = {"url": fleet} if isinstance(fleet, str) else dict(fleet)
    if name is not None:
        opts["name"] = name
    if node is not None:
        opts["node"] = node
    if allow is not None:
        opts["allow"] = [int(n) for n in allow]
    for k in ("creds", "tls_ca", "tls_cert", "tls_key"):
        if opts.get(k) is not None:
            opts[k] = os.fspath(opts[k])
    return opts


def fleet_send(target: str, num: int) -> Dict[str, Any]:
    """Sends signal ``num`` to a fleet target (``fleet:workers``,
    ``node:b:worker1``, ``any-node:worker``) from a child of a group in a
    fleet; returns what the nodes answered: ``accepted`` (node names),
    ``rejected`` ((node, reason) pairs), ``missing`` (live nodes that did not
    answer in time) and ``text``. Raises OSError when it cannot be sent
    (no fleet, the bridge or NATS down, nobody listening)."""
    return _flare.fleet_send(target, int(num))


def run(
    app: Optional[str] = None,
    *,
    worker: Union[None, str, Callable[[], Any]] = None,
    mule: Union[None, str, Callable[[], Any]] = None,
    spooler: Union[None, str, Callable[[], Any]] = None,
    mule_scripts: Iterable[str] = (),
    import_only: bool = False,
    setup: Optional[Callable[[], Any]] = None,
    **options: Any,
) -> Dict[str, Any]:
    """Builds a :class:`Group` from ``options``, imports ``app`` (``module`` or
    ``module:callable``, the callable being the workers' entry) so that its
    registrations are the master's, and runs the group. ``mule`` and
    ``spooler`` name entries in the app module (or ``module:callable``,
    imported in that child only). ``mule_scripts``: mule N runs the N-th
    file as ``__main__`` (uWSGI ``--mule=FILE.py``); the scripts' mules
    come first. ``import_only``: ``app`` is imported for its registrations
    only (a WSGI ``module:application`` from a uWSGI config). ``setup``
    runs in the master after the import, before the fork."""
    scripts = [s for s in mule_scripts]
    if scripts:
        options["mules"] = options.get("mules", 0) + len(scripts)
    group = Group(**options)
    module = None
    if app is not None:
        mod_name, sep, attr = app.partition(":")
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(mod_name)
        if sep and worker is None and not import_only:
            worker = attr
    if setup is not None:
        setup()
    return group.run(
        worker=_resolve(module, worker),
        mule=_mule_scripts(scripts, _resolve(module, mule)),
        spooler=_resolve(module, spooler),
    )

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

import importlib
import json
import os
import sys
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from . import _flare
from ._flare import NoSignalAvailable

__version__ = "0.1.0"

__all__ = [
    "Group",
    "run",
    "whoami",
    "stop",
    "serve_forever",
    "NoSignalAvailable",
    "at_fork",
    "__version__",
]

Entry = Optional[Callable[[], Any]]

_post_fork: List[Callable[[], Any]] = []


def whoami() -> Optional[Tuple[str, int, int]]:
    """``(role, id, pid)`` of this process (role: master, worker, mule,
    spooler), or None outside a flare group."""
    return _flare.whoami()


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
        harakiri: Optional[float] = None,
        drain_timeout: Optional[float] = None,
        busy_poll: Optional[float] = None,
        stall: Optional[float] = None,
    ) -> None:
        farm_list = _farm_list(farms)
        self._native = _flare.Group(
            workers=workers,
            mules=mules,
            farms=farm_list,
            spoolers=spoolers,
            remote=remote,
            remote_allow=list(remote_allow) if remote_allow is not None else None,
            stats=stats,
            control=control,
            harakiri=harakiri,
            drain_timeout=drain_timeout,
            busy_poll=busy_poll,
            stall=stall,
        )
        from . import uwsgi as compat

        compat._configure(
            master_pid=os.getpid(),
            workers=workers,
            mules=mules,
            farms=farm_list,
            spoolers=spoolers,
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
        hook = getattr(sys.modules.get("uwsgi"), "post_fork_hook", None)
        for f in list(_post_fork) + ([hook] if callable(hook) else []):
            f()
        if entry is None:
            _flare.serve_forever()
        return entry()

    return start


def _resolve(module: Any, ref: Union[None, str, Callable[[], Any]]) -> Entry:
    """An entry given as a callable, ``name`` (in the app module) or
    ``module:name``."""
    if ref is None or callable(ref):
        return ref
    mod_name, sep, attr = ref.rpartition(":")
    mod = importlib.import_module(mod_name) if sep else module
    if mod is None:
        raise ValueError(f"entry {ref!r}: give module:callable")
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise ValueError(f"entry {ref!r}: {mod.__name__} has no {attr!r}") from None


def run(
    app: Optional[str] = None,
    *,
    worker: Union[None, str, Callable[[], Any]] = None,
    mule: Union[None, str, Callable[[], Any]] = None,
    spooler: Union[None, str, Callable[[], Any]] = None,
    **options: Any,
) -> Dict[str, Any]:
    """Builds a :class:`Group` from ``options``, imports ``app`` (``module`` or
    ``module:callable``, the callable being the workers' entry) so that its
    registrations are the master's, and runs the group. ``mule`` and
    ``spooler`` name entries in the app module (or ``module:callable``)."""
    group = Group(**options)
    module = None
    if app is not None:
        mod_name, sep, attr = app.partition(":")
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())
        module = importlib.import_module(mod_name)
        if sep and worker is None:
            worker = attr
    return group.run(
        worker=_resolve(module, worker),
        mule=_resolve(module, mule),
        spooler=_resolve(module, spooler),
    )

"""Where this process stands in a flare group, and what registrations do there.

Every registration and send of the Python layer (``uwsgi``,
``flare.runtime.*``, ``uwsgidecorators`` through them) comes here. A process
is in one of three states:

- **member**: it built a :class:`flare.Group` (the master, before its run) or
  was forked by one, or it attached (:func:`attach`) in this very process.
  Calls go straight to the native core.
- **outside**: anything else (a gunicorn master importing the app with
  ``--preload``, a test, ``manage.py``). Registrations and sources are
  *recorded* here, in order, and nothing connects. :func:`attach` (in the
  process that will be the member: after the fork) replays them. ``send()``
  raises :class:`NotInGroup`, or joins first when ``FLARE_ATTACH`` is set,
  or runs the handlers inline when asked (``flare.testing.run_inline()``,
  ``FLARE_INLINE=1``).

A process forked from an attached one (``os.fork``, a server's worker
fork) is outside again: the attachment belongs to the pid that made it.
"""

import os
import sys
import threading
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from . import _flare


class NotInGroup(RuntimeError):
    """A call that needs a flare group, made in a process outside one."""


class Recorded(NamedTuple):
    """A registration or source made outside a group, replayed on attach."""

    kind: str  # "register", "timer", "rb_timer", "cron", "file_monitor"
    num: int
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]


# Set by flare.Group in the master: it and every child flare forks are members.
_group = False
# The pid that attached, 0 when none: only that process is the member.
_attached_pid = 0
_attached_info: Optional[Tuple[str, int, int, int]] = None  # role, id, pid, master pid
_recorded: List[Recorded] = []
# Numbers handed out by reserve() outside a group (Signal() / get_free_signal).
_reserved: set = set()
_inline = os.environ.get("FLARE_INLINE", "") not in ("", "0")
_lock = threading.RLock()


def _after_fork_in_child() -> None:
    global _lock
    # Another thread may have held it at the fork.
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def group_built() -> None:
    """This process builds a group's master (flare.Group)."""
    global _group
    _group = True


def is_member() -> bool:
    """Whether calls go to the native core here."""
    return _group or is_attached()


def is_attached() -> bool:
    """Whether this very process joined a group through its attach socket."""
    return _attached_pid != 0 and _attached_pid == os.getpid()


def recorded() -> List[Recorded]:
    """What was recorded outside a group, in order."""
    return list(_recorded)


def set_inline(on: bool) -> None:
    global _inline
    _inline = bool(on)


def clear_recorded() -> None:
    _recorded.clear()
    _reserved.clear()


# ---- attach ----------------------------------------------------------------


def attach_path(path: Optional[str]) -> str:
    path = path or os.environ.get("FLARE_ATTACH", "")
    if not path:
        raise ValueError(
            "flare.attach(): no socket given and FLARE_ATTACH is not set; pass the master's "
            "attach socket (python -m flare --attach PATH), e.g. flare.attach('/run/app/flare.attach')"
        )
    return path


def attach(path: Optional[str] = None) -> Tuple[str, int, int]:
    """Joins the group at ``path`` (default: ``$FLARE_ATTACH``) as a worker and
    replays what was recorded; returns ``(role, id, pid)``. Once per
    process: a second call returns the same answer."""
    global _attached_pid, _attached_info
    path = attach_path(path)
    with _lock:
        if _attached_pid == os.getpid() and _attached_info is not None:
            return _attached_info[:3]
        if _group:
            raise RuntimeError(
                "flare.attach() in a flare group's own process: its master and children are members already"
            )
        from . import uwsgi as compat

        def on_ready() -> None:
            # A member now, not yet delivered to: what was recorded is
            # registered before the first signal comes.
            global _attached_pid
            _attached_pid = os.getpid()
            _replay()

        try:
            role, wid, pid = _flare.attach(path, on_ready)
        except BaseException:
            _attached_pid = 0
            raise
        _attached_info = (role, wid, pid, 0)
        compat._configure_attached(_flare.master_pid() or 0)
        sys.modules["uwsgi"] = compat
        # This process just became a worker: what runs in every worker
        # after its fork under uWSGI runs now (uwsgidecorators' @postfork,
        # flare.at_fork).
        hook = getattr(compat, "post_fork_hook", None)
        import flare

        for f in list(flare._post_fork) + ([hook] if callable(hook) else []):
            f()
        return (role, wid, pid)


def _replay() -> None:
    for i, r in enumerate(list(_recorded)):
        try:
            _NATIVE[r.kind](r.num, *r.args, **r.kwargs)
        except Exception as e:
            note = f" (replaying {r.kind} of signal {r.num}, recorded before attach: {i + 1} of {len(_recorded)})"
            try:
                wrapped = type(e)(f"{e}{note}")
            except Exception:
                raise e from None
            raise wrapped from e


def _lazy_attach(what: str) -> None:
    """``send()`` outside a group: joins first when FLARE_ATTACH says where,
    else a clear error."""
    if _attached_pid and _attached_pid != os.getpid():
        raise NotInGroup(
            f"{what}: this process was forked from an attached worker (pid {_attached_pid}), "
            f"which is the member, not this process; raise it there, or through the group's "
            f"remote socket (Signal(n).send(remote=ADDR))"
        )
    if os.environ.get("FLARE_ATTACH"):
        attach(None)
        return
    raise NotInGroup(
        f"{what}: this process is not in a flare group. Join one with flare.attach(PATH) "
        f"or FLARE_ATTACH=PATH (the master's --attach socket; docs/attach.md); in tests, "
        f"flare.testing.run_inline() (or FLARE_INLINE=1) runs the handlers here instead"
    )


# ---- registrations ---------------------------------------------------------


def _record(kind: str, num: int, *args: Any, **kwargs: Any) -> None:
    _flare.check_signal(num)
    _recorded.append(Recorded(kind, int(num), args, kwargs))


def register(n: int, target: str, func: Callable[[int], Any]) -> None:
    if is_member():
        _flare.register(n, target, func)
        return
    # The same checks as in a group: a bad target or handler fails here.
    _flare.check_registration(n, target, func)
    # The same process registering a number again replaces its handler.
    _recorded[:] = [r for r in _recorded if not (r.kind == "register" and r.num == n)]
    _record("register", n, target, func)


def _source(kind: str, n: int, *args: Any, **kwargs: Any) -> int:
    if is_member():
        return _NATIVE[kind](n, *args, **kwargs)
    _record(kind, n, *args, **kwargs)
    # No source id exists before the master made one.
    return 0


def add_timer(n: int, secs: float, unique: bool = False, fleet_unique: Any = None) -> int:
    return _source("timer", n, secs, unique=unique, fleet_unique=fleet_unique)


def add_rb_timer(
    n: int, secs: float, repeat: Optional[int] = None, unique: bool = False, fleet_unique: Any = None
) -> int:
    return _source("rb_timer", n, secs, repeat, unique=unique, fleet_unique=fleet_unique)


def add_cron(n: int, spec: Any, unique: bool = False, fleet_unique: Any = None) -> int:
    if not is_member():
        _flare.check_cron(spec)
    return _source("cron", n, spec, unique=unique, fleet_unique=fleet_unique)


def add_file_monitor(n: int, path: str, recursive: bool = False) -> int:
    return _source("file_monitor", n, path, recursive=recursive)


_NATIVE: Dict[str, Callable[..., Any]] = {
    "register": _flare.register,
    "timer": _flare.add_timer,
    "rb_timer": _flare.add_rb_timer,
    "cron": _flare.add_cron,
    "file_monitor": _flare.add_file_monitor,
}


def remove_source(source_id: int) -> None:
    if not is_member():
        raise NotInGroup(f"remove_source({source_id}): this process is not in a flare group")
    _flare.remove_source(source_id)


def _recorded_numbers() -> set:
    return {r.num for r in _recorded if r.kind == "register"} | _reserved


def registered(n: int) -> bool:
    if is_member():
        return _flare.registered(n)
    _flare.check_signal(n)
    return int(n) in _recorded_numbers()


def available() -> int:
    if is_member():
        return _flare.available()
    taken = _recorded_numbers()
    for n in range(256):
        if n not in taken:
            return n
    raise _flare.NoSignalAvailable("all 256 signal numbers are registered or reserved in this process")


def reserve() -> int:
    if is_member():
        return _flare.reserve()
    n = available()
    _reserved.add(n)
    return n


# ---- sending ---------------------------------------------------------------


def send(n: int) -> None:
    if is_member():
        _flare.send(n)
        return
    _flare.check_signal(n)
    if _inline:
        run_inline(int(n))
        return
    _lazy_attach(f"signal {n} was not sent")
    _flare.send(n)


def run_inline(n: int) -> int:
    """Runs, here and now, every handler recorded for ``n``; returns how many."""
    ran = 0
    for r in list(_recorded):
        if r.kind == "register" and r.num == n:
            r.args[1](n)
            ran += 1
    return ran


def whoami() -> Optional[Tuple[str, int, int]]:
    if not is_member():
        return None
    return _flare.whoami()


def master_pid() -> int:
    return _attached_info[3] if _attached_info and is_member() else 0

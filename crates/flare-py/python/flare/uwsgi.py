"""The signal part of uWSGI's ``uwsgi`` module, on flare.

Inside processes that flare runs (after :class:`flare.Group` is built),
``import uwsgi`` gives this module, so code written for uWSGI's signals
(``uwsgiconf.runtime.signals``, ``uwsgiconf.runtime.scheduling``,
``uwsgidecorators``) runs unmodified. What uWSGI offers beyond signals
(caches, RPC, mule messages) raises
``NotImplementedError`` naming what to use instead.
"""

import os
import signal as _os_signal
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _flare

#: Number of workers (uWSGI's ``numproc``).
numproc = 0

#: Options, as uWSGI exposes them: bytes keys and values (uwsgiconf reads
#: ``opt[b'farm']``), with str keys too for older code (uwsgidecorators).
opt: Dict[Any, Any] = {}

#: Spooler return codes (uWSGI constants uwsgidecorators reads).
SPOOL_OK = -2
SPOOL_RETRY = -1
SPOOL_IGNORE = 0

_master_pid = 0
_farms: List[Tuple[str, List[int]]] = []


def _configure(master_pid: int, workers: int, mules: int, farms, spoolers: int, spooler_dirs=(), locks: int = 0) -> None:
    """Called by flare.Group in the master, before any fork."""
    global numproc, _master_pid, _farms
    numproc = workers
    _master_pid = master_pid
    _farms = list(farms)
    opt.clear()
    values = {
        "master": True,
        "workers": str(workers).encode(),
        "mules": str(mules).encode(),
        "mule": [b"flare"] * mules,
        "farm": [f"{name}:{','.join(map(str, ids))}".encode() for name, ids in _farms],
    }
    if spooler_dirs:
        values["spooler"] = [os.fsencode(d) for d in spooler_dirs]
    elif spoolers:
        values["spooler"] = [b"flare"] * spoolers
    if locks:
        values["locks"] = str(locks).encode()
    for k, v in values.items():
        opt[k.encode()] = v
        opt[k] = v


def _me() -> Tuple[str, int, int]:
    return _flare.whoami() or ("", 0, os.getpid())


# ---- signals ---------------------------------------------------------------


def register_signal(num: int, target: str, func: Callable[[int], Any]) -> None:
    """Registers ``func`` for signal ``num`` on ``target`` (empty: ``worker``).
    In the master before the fork, every child inherits it; in a child, only
    that child runs it."""
    _flare.register(num, target or "worker", func)


def signal(num: int, remote: Optional[str] = None) -> None:
    """Raises signal ``num`` here, or on the node at ``remote``
    (``ValueError`` when it rejects it, ``OSError`` when unreachable)."""
    if remote:
        _flare.send_remote(remote, num)
    else:
        _flare.send(num)


def signal_wait(num: Optional[int] = None) -> int:
    """Blocks until signal ``num`` (any signal when None) has been received
    and its handler run; returns its number."""
    got = _flare.wait(num)
    return 0 if got is None else got


def signal_received() -> int:
    """The last signal this process received (0 before the first, as uWSGI)."""
    last = _flare.last_received()
    return 0 if last is None else last


def signal_registered(num: int) -> bool:
    """Whether ``num`` is registered anywhere in the group."""
    return _flare.registered(num)


# ---- sources ---------------------------------------------------------------


def add_timer(num: int, secs: float) -> None:
    """Raises ``num`` every ``secs`` seconds."""
    _flare.add_timer(num, float(secs))


def add_ms_timer(num: int, ms: int) -> None:
    """Raises ``num`` every ``ms`` milliseconds."""
    _flare.add_timer(num, ms / 1000.0)


def add_rb_timer(num: int, secs: float, iterations: int = 0) -> None:
    """Raises ``num`` every ``secs`` seconds, ``iterations`` times (0: for ever)."""
    _flare.add_rb_timer(num, float(secs), iterations or None)


def add_cron(num: int, minute: int, hour: int, day: int, month: int, week: int) -> None:
    """Raises ``num`` in every local minute matching (``-1`` every, ``-N``
    every N, weekday 0 or 7 Sunday)."""
    _flare.add_cron(num, (int(minute), int(hour), int(day), int(month), int(week)))


def add_file_monitor(num: int, path: str) -> None:
    """Raises ``num`` when ``path`` changes (it may not exist yet)."""
    _flare.add_file_monitor(num, os.fspath(path))


# ---- who and where ---------------------------------------------------------


def worker_id() -> int:
    """This worker's id, 0 when not a worker."""
    role, wid, _ = _me()
    return wid if role == "worker" else 0


def mule_id() -> int:
    """This mule's id, 0 when not a mule."""
    role, mid, _ = _me()
    return mid if role == "mule" else 0


def i_am_the_spooler() -> bool:
    """Whether this process is a spooler."""
    return _me()[0] == "spooler"


def masterpid() -> int:
    """The master's pid."""
    return _master_pid


def in_farm(name: Optional[str] = None) -> bool:
    """Whether this mule belongs to farm ``name`` (any farm when None)."""
    mid = mule_id()
    return bool(mid) and any(mid in ids and (name is None or n == name) for n, ids in _farms)


def stop() -> None:
    """Shuts the group down gracefully."""
    _flare.stop()


def reload() -> None:
    """Restarts every child, one at a time (SIGHUP to the master)."""
    os.kill(_master_pid, _os_signal.SIGHUP)


# ---- the spooler ------------------------------------------------------------
#
# Jobs are files in a spool directory (python -m flare --spooler DIR); the
# spoolers call ``uwsgi.spooler`` (set by uwsgidecorators and uwsgiconf at
# import) with the job's dict. At least once: see docs/spooler.md.

#: The function spoolers call with each job's dict (bytes keys and
#: values, ``spooler_task_name`` and ``body`` among them); it returns
#: SPOOL_OK, SPOOL_RETRY or SPOOL_IGNORE.
spooler: Optional[Callable[[Dict[bytes, bytes]], int]] = None

#: Keys that are options of the job rather than its data.
_SPOOL_OPTIONS = ("spooler", "priority", "at", "body")


def _as_bytes(what: str, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"spool(): {what} is a {type(value).__name__}; a job is a dict of bytes or str keys and values")


def _number(key: str, value: Any, kind: type) -> Any:
    if isinstance(value, (bytes, str)):
        text = value.decode() if isinstance(value, bytes) else value
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"spool(): {key!r} must be a number, not {text!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"spool(): {key!r} is a {type(value).__name__}; give a number (bytes, str, int)")
    return kind(value)


def spool(*args: Any, **kwargs: Any) -> bytes:
    """Spools a job (uWSGI ``uwsgi.spool``): a dict of bytes or str keys and
    values, given as one dict or as keyword arguments. ``spooler`` (a
    configured spool directory), ``priority`` (lower runs first), ``at``
    (Unix time, not run before) and ``body`` (bytes of any size) are the
    job's options. Returns the job file's path."""
    if len(args) > 1 or (args and not isinstance(args[0], dict)):
        raise TypeError("spool() takes one dict, or keyword arguments")
    job = dict(args[0]) if args else {}
    job.update(kwargs)
    fields: Dict[str, Any] = {}
    pairs = []
    for key, value in job.items():
        k = _as_bytes(f"key {key!r}", key)
        name = k.decode("utf-8", "replace")
        if name in _SPOOL_OPTIONS:
            fields[name] = value
            continue
        pairs.append((k, _as_bytes(f"the value of {name!r} ({value!r})", value)))
    body = fields.get("body")
    spooler_dir = fields.get("spooler")
    return _flare.spool(
        pairs,
        body=None if body is None else _as_bytes("the body", body),
        at=None if fields.get("at") is None else _number("at", fields["at"], float),
        priority=None if fields.get("priority") is None else _number("priority", fields["priority"], int),
        spooler=None if spooler_dir is None else os.fsdecode(_as_bytes("spooler", spooler_dir)),
    )


#: uWSGI's other name for :func:`spool`.
send_to_spooler = spool


def spooler_jobs() -> List[bytes]:
    """The job files waiting in the first spool directory, in run order."""
    return _flare.spooler_jobs()


def set_spooler_frequency(secs: float) -> bool:
    """How often spoolers look again at jobs to retry, for the whole group
    (new jobs start at once regardless)."""
    _flare.set_spooler_frequency(float(secs))
    return True


def _run_spool_task(name: bytes, args: Dict[bytes, bytes], body: bytes) -> int:
    """Called by a spooler for each job: gives ``uwsgi.spooler`` the dict
    uWSGI gives it."""
    handler = spooler
    if handler is None:
        raise RuntimeError("no uwsgi.spooler function is set: the job is kept and retried")
    job = dict(args)
    job[b"spooler_task_name"] = name
    if body:
        job[b"body"] = body
    ret = handler(job)
    return ret if isinstance(ret, int) and not isinstance(ret, bool) else SPOOL_RETRY


# ---- locks -----------------------------------------------------------------
#
# Shared by every process of the group (python -m flare --locks N adds locks
# 1..N to lock 0); a process that dies holding a lock releases it.


def lock(num: int = 0) -> None:
    """Takes lock ``num``, waiting while another process (or thread) holds it."""
    _flare.lock(int(num))


def unlock(num: int = 0) -> None:
    """Releases lock ``num``."""
    _flare.unlock(int(num))


def is_locked(num: int = 0) -> bool:
    """Whether lock ``num`` is held anywhere in the group."""
    return _flare.is_locked(int(num))


# ---- what flare does not do ------------------------------------------------


def _missing(name: str, instead: str) -> Callable[..., Any]:
    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise NotImplementedError(f"uwsgi.{name} is not part of flare's signal framework; {instead}")

    unavailable.__name__ = name
    return unavailable


_INSTEAD = {
    "cache_get": "keep shared state in your own store (Redis, a database, files)",
    "cache_set": "keep shared state in your own store (Redis, a database, files)",
    "cache_update": "keep shared state in your own store (Redis, a database, files)",
    "cache_del": "keep shared state in your own store (Redis, a database, files)",
    "cache_exists": "keep shared state in your own store (Redis, a database, files)",
    "cache_clear": "keep shared state in your own store (Redis, a database, files)",
    "register_rpc": "raise a signal for the target process instead (flare.runtime.signals.Signal)",
    "rpc": "raise a signal for the target process instead (flare.runtime.signals.Signal)",
    "mule_msg": "raise a signal for the mule (target muleN or farm_NAME) and pass data through your own store",
    "mule_get_msg": "register a signal handler on the mule instead",
    "farm_msg": "raise a signal for farm_NAME instead",
    "farm_get_msg": "register a signal handler on the farm's mules instead",
    "set_user_harakiri": "set a handler time limit: python -m flare --harakiri SECS",
    "metric_inc": "read flare's counters from its stats endpoint (--stats)",
    "metric_dec": "read flare's counters from its stats endpoint (--stats)",
    "metric_get": "read flare's counters from its stats endpoint (--stats)",
    "metric_set": "read flare's counters from its stats endpoint (--stats)",
    "erlang_register_process": "not supported",
}

for _name, _instead in _INSTEAD.items():
    globals()[_name] = _missing(_name, _instead)

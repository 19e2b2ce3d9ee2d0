"""The signal part of uWSGI's ``uwsgi`` module, on flare.

Inside processes that flare runs (after :class:`flare.Group` is built),
in processes that joined a group (``flare.attach()``, ``FLARE_ATTACH``),
and wherever no real ``uwsgi`` module exists (docs/attach.md),
``import uwsgi`` gives this module, so code written for uWSGI's signals
(``uwsgiconf.runtime.signals``, ``uwsgiconf.runtime.scheduling``,
``uwsgidecorators``) runs unmodified, and so do mule and farm messages,
time limits from code, the spooler and locks, local RPC and the platform names uwsgiconf reads.
Every name uwsgiconf's runtime modules touch exists; what flare does not
do (caches, metrics, websockets, async, ...) raises ``NotImplementedError``
naming what to use instead when called.
"""

import os
import signal as _os_signal
import socket as _socket
import sys as _sys
import time as _time
import traceback as _traceback
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _core, _flare

#: Number of workers (uWSGI's ``numproc``).
numproc = 0

#: Options, as uWSGI exposes them: bytes keys and values (uwsgiconf reads
#: ``opt[b'farm']``), with str keys too for older code (uwsgidecorators).
#: Outside a group (a web worker before ``flare.attach()``, which gunicorn
#: calls after importing the app; a test) the spool directories are not
#: known yet: ``spooler`` is there and empty, so that a module using
#: uwsgidecorators' @spool imports (it looks for the key at import);
#: ``spool()`` there raises ``NotInGroup``.
opt: Dict[Any, Any] = {"spooler": [], b"spooler": []}

#: Spooler return codes (uWSGI constants uwsgidecorators reads).
SPOOL_OK = -2
SPOOL_RETRY = -1
SPOOL_IGNORE = 0

_master_pid = 0
_mules = 0
_farms: List[Tuple[str, List[int]]] = []


def _configure(master_pid: int, workers: int, mules: int, farms, spoolers: int, spooler_dirs=(), locks: int = 0) -> None:
    """Called by flare.Group in the master, before any fork."""
    global numproc, _master_pid, _farms, _mules, started_on
    numproc = workers
    _master_pid = master_pid
    _mules = mules
    started_on = int(_time.time())
    _farms = list(farms)
    spooler = [os.fsencode(d) for d in spooler_dirs] or [b"flare"] * spoolers
    _set_opt(workers, mules, spooler, locks, _farms)


def _configure_attached(master_pid: int) -> None:
    """Called by flare.attach() once this process is a worker of the group
    at the attach socket: the names that describe the group, as a forked
    worker sees them (uwsgidecorators' @spool looks for ``opt['spooler']``
    when a module is imported; @lock for ``opt['locks']``). Farm names are
    not passed to attached processes: no ``opt['farm']``."""
    global numproc, _master_pid, started_on, _mules
    _master_pid = master_pid
    started_on = int(_time.time())
    roles = [p[0] for p in _flare.processes()]
    numproc = roles.count("worker")
    _mules = roles.count("mule")
    spooler = [os.fsencode(d) for d in _flare.spooler_dirs()]
    _set_opt(numproc, _mules, spooler, _flare.lock_count(), None)


def _set_opt(workers: int, mules: int, spooler: List[bytes], locks: int, farms) -> None:
    """Fills ``opt`` as uWSGI does for such a group, replacing what was there
    (the placeholder of a process outside a group too): no ``spooler``
    without spool directories, no ``locks`` without locks, no ``farm`` when
    ``farms`` is None."""
    opt.clear()
    values = {
        "master": True,
        "workers": str(workers).encode(),
        "mules": str(mules).encode(),
        "mule": [b"flare"] * mules,
    }
    if farms is not None:
        values["farm"] = [f"{name}:{','.join(map(str, ids))}".encode() for name, ids in farms]
    if spooler:
        values["spooler"] = spooler
    if locks:
        values["locks"] = str(locks).encode()
    for k, v in values.items():
        opt[k.encode()] = v
        opt[k] = v


def _me() -> Tuple[str, int, int]:
    return _core.whoami() or ("", 0, os.getpid())


# ---- signals ---------------------------------------------------------------


def register_signal(num: int, target: str, func: Callable[[int], Any]) -> None:
    """Registers ``func`` for signal ``num`` on ``target`` (empty: ``worker``).
    In the master before the fork, every child inherits it; in a child, only
    that child runs it."""
    _core.register(num, target or "worker", func)


def signal(num: int, remote: Optional[str] = None) -> None:
    """Raises signal ``num`` here, or on the node at ``remote``
    (``ValueError`` when it rejects it, ``OSError`` when unreachable).
    flare: ``remote`` may be a fleet target (``fleet:workers``,
    ``node:b:worker1``, ``any-node:worker``; docs/fleet.md): ``OSError``
    unless every live node it went to accepted it."""
    if remote:
        _flare.send_remote(remote, num)
    else:
        _core.send(num)


def signal_wait(num: Optional[int] = None) -> int:
    """Blocks until signal ``num`` (any signal when None) has been received
    and its handler run; returns its number."""
    got = _flare.wait(num)
    return 0 if got is None else got


def signal_received() -> int:
    """Inside a handler, the signal being handled; elsewhere the last signal
    this process received (after ``signal_wait()``: the one it returned;
    0 before the first)."""
    current = _flare.current_signal()
    if current is not None:
        return current
    last = _flare.last_received()
    return 0 if last is None else last


def signal_registered(num: int) -> bool:
    """Whether ``num`` is registered anywhere in the group."""
    return _core.registered(num)


# ---- sources ---------------------------------------------------------------


def add_timer(num: int, secs: float, fleet_unique: Any = None) -> None:
    """Raises ``num`` every ``secs`` seconds (flare: ``fleet_unique=True``
    once per fleet, docs/fleet.md)."""
    _core.add_timer(num, float(secs), fleet_unique=fleet_unique or None)


def add_ms_timer(num: int, ms: int) -> None:
    """Raises ``num`` every ``ms`` milliseconds."""
    _core.add_timer(num, ms / 1000.0)


def add_rb_timer(num: int, secs: float, iterations: int = 0) -> None:
    """Raises ``num`` every ``secs`` seconds, ``iterations`` times (0: for ever)."""
    _core.add_rb_timer(num, float(secs), iterations or None)


def add_cron(
    num: int, minute: int, hour: int, day: int, month: int, week: int, fleet_unique: Any = None
) -> None:
    """Raises ``num`` in every local minute matching (``-1`` every, ``-N``
    every N, weekday 0 or 7 Sunday); flare: ``fleet_unique=True`` once per
    fleet."""
    _core.add_cron(num, (int(minute), int(hour), int(day), int(month), int(week)), fleet_unique=fleet_unique or None)


def add_file_monitor(num: int, path: str) -> None:
    """Raises ``num`` when ``path`` changes (it may not exist yet)."""
    _core.add_file_monitor(num, os.fspath(path))


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
    """The master's pid. Outside a group (before ``flare.attach()``, in a
    test), this process's pid: never 0, which uwsgidecorators refuses at
    import, and never a process that is not ours."""
    return _master_pid or os.getpid()


def in_farm(name: Optional[str] = None) -> bool:
    """Whether this mule belongs to farm ``name`` (any farm when None)."""
    mid = mule_id()
    return bool(mid) and any(mid in ids and (name is None or n == name) for n, ids in _farms)


def stop() -> None:
    """Shuts the group down gracefully."""
    _flare.stop()


def reload() -> None:
    """Restarts every child, one at a time (SIGHUP to the master)."""
    if not _core.is_member():
        raise _core.NotInGroup("uwsgi.reload(): this process is not in a flare group")
    if not _master_pid:
        raise RuntimeError(
            "uwsgi.reload(): the master's pid is not known here; "
            "use the control socket (flare ctl PATH reload)"
        )
    # An attached worker's reload restarts the forked children; attached
    # processes are their server's to restart.
    os.kill(_master_pid, _os_signal.SIGHUP)


# ---- mule and farm messages ------------------------------------------------


def _message(message: Any) -> bytes:
    if isinstance(message, str):
        return message.encode()
    if isinstance(message, (bytes, bytearray, memoryview)):
        return bytes(message)
    raise TypeError(f"a mule message is bytes or str, not {type(message).__name__}")


def mule_msg(message: Any, mule: Any = None) -> bool:
    """Sends ``message`` (bytes or str) to mule ``mule`` (an id; 0 or None:
    whichever mule reads first) or to one mule of the farm named ``mule``.
    Waits while that mailbox is full, so it returns True (uWSGI drops the
    message and returns False); ``ValueError`` for a message larger than
    ``--mule-msg-size`` (64 KiB) or an unknown mule or farm."""
    data = _message(message)
    if _core.is_attached():
        raise ValueError(
            "mule messages are not passed to attached workers; raise a signal for a mule instead"
        )
    if _mules < 1:
        raise ValueError("no mule configured")
    if isinstance(mule, str):
        return _flare.farm_msg(mule, data)
    if mule is None:
        mule = 0
    if isinstance(mule, bool) or not isinstance(mule, int) or mule < 0:
        raise ValueError(f"invalid mule {mule!r}: a mule id (0: any mule) or a farm name")
    return _flare.mule_msg(data, mule)


def farm_msg(farm: str, message: Any) -> None:
    """Sends ``message`` to one mule of farm ``farm`` (waits while its
    mailbox is full)."""
    _flare.farm_msg(farm, _message(message))


def mule_get_msg(signals: Any = True, farms: Any = True, buffer_size: int = 65536, timeout: Any = -1) -> Optional[bytes]:
    """The next message for this mule: from its own mailbox, the shared one
    (``mule_msg(msg)`` / ``mule_msg(msg, 0)``) and, with ``farms``, its
    farms'. With ``signals``, returns None when this mule handled a signal
    while waiting, as uWSGI does; after ``timeout`` seconds (-1: for good)
    returns ``b''``. ``buffer_size`` is accepted for uWSGI's sake: messages
    are never cut short. Only in a mule (``ValueError`` elsewhere)."""
    secs = None if timeout is None or timeout < 0 else float(timeout)
    kind, data = _flare.mule_get_msg(signals not in (None, False), farms not in (None, False), secs)
    if kind == "message":
        return data
    return None if kind == "signal" else b""


def farm_get_msg() -> Optional[bytes]:
    """The next message for one of this mule's farms (waits for it)."""
    return _flare.farm_get_msg()


def try_mule_msg(message: Any, mule: Any = None) -> bool:
    """flare only: :func:`mule_msg` that returns False instead of waiting
    when the mailbox is full."""
    data = _message(message)
    if isinstance(mule, str):
        return _flare.farm_msg(mule, data, False)
    return _flare.mule_msg(data, mule or 0, False)


def _mule_loop() -> None:
    """What a mule without code of its own does once ``mule_msg_hook`` is
    set (uwsgidecorators' ``@mulefunc``, uwsgiconf's ``Mule.offload``), as
    under uWSGI: reads its messages and hands each to the hook."""
    while True:
        message = mule_get_msg()
        hook = globals().get("mule_msg_hook")
        if message and callable(hook):
            try:
                hook(message)
            except Exception:
                _traceback.print_exc()


# ---- handler time limits from code -----------------------------------------


def set_user_harakiri(seconds: float) -> None:
    """Gives this process ``seconds`` from now to finish (0: no limit), as
    uWSGI's: past it the master writes the Python stack of every thread to
    the log, then kills and respawns the process (``@harakiri(secs)``)."""
    _flare.set_user_harakiri(float(seconds))


# ---- the platform (uwsgiconf.runtime.platform, control, logging) -----------

#: Unix time the group started.
started_on = 0

#: Handlers one process runs at a time (uWSGI's async cores): 1.
cores = 1

#: uWSGI's request buffer size default; flare serves no requests.
buffer_size = 4096

#: Threads may be used in every flare process.
has_threads = True

#: flare serves no WSGI applications.
applications = None

#: The machine's name (bytes, as uWSGI).
hostname = _socket.gethostname().encode()

#: flare's version (uWSGI reports its own here).
version = b"0.1.0"

#: The same, as uWSGI's (major, minor, revision, custom number, custom string).
version_info = (0, 1, 0, 0, "")

#: Placeholders of the configuration; flare has none.
magic_table: Dict[Any, Any] = {}

#: Whether the stub is in use (uwsgiconf sets this): no, this is flare.
is_stub = False

_STATUS = {"running": "idle", "paused": "pause", "cheaped": "cheap", "respawning": "respawning", "stopped": "stopped"}


def workers() -> Tuple[Dict[str, Any], ...]:
    """Every worker, as uWSGI's ``workers()``: id, pid, status (``idle``,
    ``busy``, ``pause``, ``cheap``, ...), requests (signals handled),
    respawn_count. Empty outside a flare child."""
    out = []
    for role, wid, pid, state, current, handled, respawns in _flare.processes():
        if role != "worker":
            continue
        status = "busy" if current is not None and state == "running" else _STATUS.get(state, state)
        out.append({"id": wid, "pid": pid, "status": status, "requests": handled, "respawn_count": respawns})
    return tuple(out)


def ready() -> bool:
    """Whether the group runs (True in every flare child)."""
    return _core.whoami() is not None


def mem() -> Tuple[int, int]:
    """(RSS, VSZ) of this process in bytes, as uWSGI's ``mem()``."""
    try:
        with open("/proc/self/statm") as f:
            vsz, rss = (int(x) for x in f.read().split()[:2])
    except OSError:
        return (0, 0)
    page = os.sysconf("SC_PAGE_SIZE")
    return (rss * page, vsz * page)


def micros() -> int:
    """Microseconds since the epoch."""
    return _time.time_ns() // 1000


def log(message: Any) -> bool:
    """Writes ``message`` and a newline to the log (stderr), as uWSGI."""
    text = message.decode(errors="replace") if isinstance(message, bytes) else str(message)
    _sys.stderr.write(text + "\n")
    _sys.stderr.flush()
    return True


def logsize() -> int:
    """uWSGI's current log size; flare does not own the log: 0."""
    return 0


def setprocname(name: Any) -> None:
    """Sets this process's name (as ``ps`` and ``top`` show it)."""
    title = name.decode() if isinstance(name, bytes) else str(name)
    try:
        with open("/proc/self/comm", "w") as f:
            f.write(title[:15])
    except OSError:
        pass


#: The request environment; flare serves no requests: empty.
env: Dict[str, str] = {}


def loop() -> Optional[str]:
    """The async loop engine's name: flare has none (None)."""
    return None


# ---- RPC, in this process ---------------------------------------------------

_rpc: Dict[str, Callable[..., Any]] = {}


def register_rpc(name: Any, func: Callable[..., Any], argc: int = 0) -> bool:
    """Registers ``func`` under ``name`` for :func:`call` / :func:`rpc` in
    this process (registered in the master: in every child). flare has no
    RPC between processes or nodes: raise a signal for that."""
    key = name.decode() if isinstance(name, bytes) else str(name)
    _rpc[key] = func
    return True


def rpc_list() -> Tuple[bytes, ...]:
    """Names registered with :func:`register_rpc`."""
    return tuple(k.encode() for k in _rpc)


def call(func_name: Any, *args: Any) -> Optional[bytes]:
    """Calls RPC function ``func_name`` here (``name@addr``: another node,
    which flare does not do); the result as bytes, as uWSGI returns it."""
    key = func_name.decode() if isinstance(func_name, bytes) else str(func_name)
    name, at, addr = key.partition("@")
    if at:
        return rpc(addr, name, *args)
    return rpc(None, name, *args)


def rpc(address: Any, func_name: Any, *args: Any) -> Optional[bytes]:
    """Calls RPC function ``func_name`` in this process (``address`` None or
    empty). Another node's: ``NotImplementedError`` (flare has no RPC;
    raise a signal on the remote node instead)."""
    if address:
        raise NotImplementedError(
            "uwsgi.rpc to another node is not part of flare; raise a signal there instead "
            "(flare.runtime.signals.Signal(n).send(remote=ADDR))"
        )
    key = func_name.decode() if isinstance(func_name, bytes) else str(func_name)
    try:
        func = _rpc[key]
    except KeyError:
        raise ValueError(f"no RPC function {key!r} registered in this process") from None
    out = func(*args)
    if out is None or isinstance(out, bytes):
        return out
    return str(out).encode()
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


def _job(args: Tuple[Any, ...], kwargs: Dict[Any, Any]) -> Tuple[Any, ...]:
    """Checks and converts one job for the native side."""
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
    return (
        pairs,
        None if body is None else _as_bytes("the body", body),
        None if fields.get("at") is None else _number("at", fields["at"], float),
        None if fields.get("priority") is None else _number("priority", fields["priority"], int),
        None if spooler_dir is None else os.fsdecode(_as_bytes("spooler", spooler_dir)),
    )


def spool(*args: Any, **kwargs: Any) -> bytes:
    """Spools a job (uWSGI ``uwsgi.spool``): a dict of bytes or str keys and
    values, given as one dict or as keyword arguments. ``spooler`` (a
    configured spool directory), ``priority`` (lower runs first), ``at``
    (Unix time, not run before) and ``body`` (bytes of any size) are the
    job's options. Returns the job file's path."""
    pairs, body, at, priority, spooler_dir = _job(args, kwargs)
    _outside("uwsgi.spool()")
    return _flare.spool(pairs, body=body, at=at, priority=priority, spooler=spooler_dir)


def spool_many(jobs: Any) -> List[bytes]:
    """Spools several jobs (dicts, as for :func:`spool`) at once, with one
    fsync of each spool directory for the whole batch (a flare addition:
    uWSGI has no such call). Returns the job files' paths, in order. A job
    that is not a dict of bytes or str fails the batch before any is
    written."""
    if isinstance(jobs, dict):
        raise TypeError("spool_many() takes a list of jobs (dicts); for one job, use spool()")
    jobs = [_job((j,), {}) for j in jobs]
    _outside("uwsgi.spool_many()")
    return _flare.spool_many(jobs)


def _outside(what: str) -> None:
    """Spooling outside a group: joins first when FLARE_ATTACH says where
    (as ``send()`` does), else ``NotInGroup`` saying what to do."""
    if not _core.is_member():
        _core._lazy_attach(what)


#: uWSGI's other name for :func:`spool`.
send_to_spooler = spool


def spooler_jobs() -> List[bytes]:
    """The job files waiting in the first spool directory, in run order."""
    return _flare.spooler_jobs()


def spooler_pids() -> List[int]:
    """The pids of the group's spooler processes, spooler 1 first (uWSGI
    ``uwsgi.spooler_pids()``); 0 for a spooler with no process now (in the
    master before the group starts: all)."""
    return list(_flare.spooler_pids())


def spooler_pid() -> int:
    """The first spooler's pid (uWSGI ``uwsgi.spooler_pid()``: the same in
    every process, a spooler included); 0 when there is none."""
    pids = _flare.spooler_pids()
    return pids[0] if pids else 0


def spooler_get_task(path: Any) -> Optional[Dict[Any, bytes]]:
    """Reads the job file at ``path`` without claiming it (uWSGI
    ``uwsgi.spooler_get_task``): the dict uWSGI returns, the job's bytes
    keys and values plus ``'spooler_task_name'`` (the path given, as
    bytes) and ``'body'`` when the job has one, both str keys as in uWSGI.
    None when there is no such file, or it cannot be read, or it is not a
    spool file. ``path`` may be str (as uWSGI wants), bytes or a path."""
    try:
        got = _flare.spooler_get_task(os.fsdecode(path))
    except OSError:
        return None
    if got is None:
        return None
    args, body = got
    task: Dict[Any, bytes] = {"spooler_task_name": os.fsencode(path)}
    task.update(args)
    if body:
        task["body"] = body
    return task


def set_spooler_frequency(secs: float) -> bool:
    """How often spoolers look again at jobs to retry, for the whole group
    (new jobs start at once regardless)."""
    _flare.set_spooler_frequency(float(secs))
    return True


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
    "metric_inc": "read flare's counters from its stats endpoint (--stats)",
    "metric_dec": "read flare's counters from its stats endpoint (--stats)",
    "metric_get": "read flare's counters from its stats endpoint (--stats)",
    "metric_set": "read flare's counters from its stats endpoint (--stats)",
    "erlang_register_process": "not supported",
    # uwsgiconf's runtime modules touch these at import or call them.
    "alarm": "log through your own logging setup; flare has no alarm subsystem",
    "async_connect": "use asyncio (or threads) in your handlers; flare has no async loop",
    "async_sleep": "use asyncio (or threads) in your handlers; flare has no async loop",
    "suspend": "use asyncio (or threads) in your handlers; flare has no async loop",
    "wait_fd_read": "use asyncio (or threads) in your handlers; flare has no async loop",
    "wait_fd_write": "use asyncio (or threads) in your handlers; flare has no async loop",
    "disconnect": "flare serves no requests; there is no client to disconnect",
    "set_logvar": "flare serves no requests and has no request log variables",
    "get_logvar": "flare serves no requests and has no request log variables",
    "websocket_handshake": "flare serves no HTTP; run websockets in your web server",
    "websocket_recv": "flare serves no HTTP; run websockets in your web server",
    "websocket_recv_nb": "flare serves no HTTP; run websockets in your web server",
    "websocket_send": "flare serves no HTTP; run websockets in your web server",
    "websocket_send_binary": "flare serves no HTTP; run websockets in your web server",
    "listen_queue": "flare serves no HTTP and has no listen queue",
    "add_var": "flare serves no requests",
    "cl": "flare serves no requests",
    "connection_fd": "flare serves no requests",
    "log_this_request": "flare serves no requests",
    "request_id": "flare serves no requests",
    "total_requests": "flare serves no requests; uwsgi.workers() counts signals handled",
    "cache_dec": "keep shared state in your own store (Redis, a database, files)",
    "cache_div": "keep shared state in your own store (Redis, a database, files)",
    "cache_inc": "keep shared state in your own store (Redis, a database, files)",
    "cache_keys": "keep shared state in your own store (Redis, a database, files)",
    "cache_mul": "keep shared state in your own store (Redis, a database, files)",
    "cache_num": "keep shared state in your own store (Redis, a database, files)",
    "metric_div": "read flare's counters from its stats endpoint (--stats)",
    "metric_mul": "read flare's counters from its stats endpoint (--stats)",
    "metric_set_max": "read flare's counters from its stats endpoint (--stats)",
    "metric_set_min": "read flare's counters from its stats endpoint (--stats)",
}

for _name, _instead in _INSTEAD.items():
    # What this module implements above always wins over a placeholder.
    if _name not in globals():
        globals()[_name] = _missing(_name, _instead)

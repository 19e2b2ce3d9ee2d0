"""gunicorn hooks that make every gunicorn worker a flare worker.

In gunicorn.conf.py::

    from flare.gunicorn import post_worker_init

with ``FLARE_ATTACH=/run/app/flare.attach`` in gunicorn's environment (or
``raw_env``), and ``python -m flare --attach /run/app/flare.attach`` running
beside it. Each worker joins after gunicorn loaded the app in it (after the
fork, also with ``--preload``), and what the app registered at import
(``@timer``, ``@signal``, ...) is registered then. See docs/attach.md.
"""

from typing import Any

from . import _core


def post_worker_init(worker: Any) -> None:
    """gunicorn's ``post_worker_init`` hook: attaches this worker."""
    role, wid, _pid = _core.attach(None)
    log = getattr(worker, "log", None)
    if log is not None:
        log.info("flare: gunicorn worker %s is flare %s%s", getattr(worker, "pid", "?"), role, wid)

"""Helpers for tests of code that uses flare, uwsgidecorators or uwsgiconf
outside a flare group (unit tests, ``manage.py``, scripts).

Outside a group, registrations (``@signal``, ``@timer``, ``@cron``,
``@filemon``, ``uwsgi.register_signal``, ...) are recorded, and ``send()``
/ ``uwsgi.signal()`` raise :class:`flare.NotInGroup`. In a test, run the
handlers inline instead::

    import flare.testing

    def test_the_cleanup_handler():
        with flare.testing.run_inline():
            uwsgi.signal(17)          # the handlers of 17 run here, now
        assert flare.testing.registrations()[0].kind == "register"

``FLARE_INLINE=1`` in the environment does the same for a whole process.
Inside a group (a member, forked or attached) nothing here changes what
``send()`` does.
"""

import contextlib
from typing import Iterator, List

from . import _core
from ._core import Recorded

__all__ = ["run_inline", "registrations", "fire", "clear", "Recorded"]


class _Inline(contextlib.ContextDecorator):
    def __init__(self, on: bool, before: bool) -> None:
        self._on = on
        self._before = before

    def __enter__(self) -> "_Inline":
        _core.set_inline(self._on)
        return self

    def __exit__(self, *exc: object) -> None:
        _core.set_inline(self._before)


def run_inline(on: bool = True) -> _Inline:
    """Outside a group, ``send(n)`` runs the handlers recorded for ``n`` in
    the calling thread instead of raising. A call turns it on (``False``:
    off) from then on; ``with run_inline():`` does it for the block and
    then puts the previous mode back."""
    inline = _Inline(on, _core._inline)
    _core.set_inline(on)
    return inline


def registrations() -> List[Recorded]:
    """What was registered outside a group, in order: ``Recorded(kind, num,
    args, kwargs)`` with kind ``register`` (args: target, handler),
    ``timer``, ``rb_timer``, ``cron``, ``file_monitor``."""
    return _core.recorded()


def fire(num: int) -> int:
    """Runs the handlers recorded for ``num`` now, as if it were delivered
    (a timer's or cron's signal, say); returns how many ran."""
    return _core.run_inline(int(num))


def clear() -> None:
    """Forgets every recorded registration (between tests)."""
    _core.clear_recorded()


@contextlib.contextmanager
def isolated() -> Iterator[None]:
    """Registrations made inside the block are forgotten after it."""
    before = _core.recorded()
    try:
        yield
    finally:
        _core._recorded[:] = before

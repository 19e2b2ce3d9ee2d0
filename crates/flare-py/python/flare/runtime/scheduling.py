"""uwsgiconf's ``runtime.scheduling``, on flare: decorators that raise a
signal on a schedule and register the function as its handler.

``target`` is an existing :class:`~flare.runtime.signals.Signal` (only the
source is added) or a signal target (a free number is reserved and the
function registered there).
"""

from typing import Any, Callable, Optional, Union

from .. import _core
from .signals import Farm, Mule, Signal

Target = Union[None, str, Mule, Farm, Signal]


def _automate(target: Target, add: Callable[[Signal], Any]) -> Callable[[Callable], Callable]:
    if isinstance(target, Signal):
        add(target)
        return lambda func: func
    return Signal().register_handler(target=target, callback=add)


def register_timer(period: float, *, target: Target = None) -> Callable[[Callable], Callable]:
    """Every ``period`` seconds."""
    return _automate(target, lambda sig: _core.add_timer(int(sig), float(period)))


def register_timer_ms(period: int, *, target: Target = None) -> Callable[[Callable], Callable]:
    """Every ``period`` milliseconds."""
    return _automate(target, lambda sig: _core.add_timer(int(sig), period / 1000.0))


def register_timer_rb(
    period: float, repeat: Optional[int] = None, *, target: Target = None
) -> Callable[[Callable], Callable]:
    """Every ``period`` seconds, ``repeat`` times (None: for ever)."""
    return _automate(target, lambda sig: _core.add_rb_timer(int(sig), float(period), repeat or None))


def register_cron(
    weekday: Optional[int] = None,
    month: Optional[int] = None,
    day: Optional[int] = None,
    hour: Optional[int] = None,
    minute: Optional[int] = None,
    *,
    target: Target = None,
) -> Callable[[Callable], Callable]:
    """In every local minute matching; None is every value, ``-N`` every N
    (uWSGI's integers; weekday 0 or 7 is Sunday)."""
    fields = tuple(-1 if v is None else int(v) for v in (minute, hour, day, month, weekday))
    return _automate(target, lambda sig: _core.add_cron(int(sig), fields))

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

#: ``fleet_unique``: False (every node runs it), True (once per fleet; a
#: firing NATS cannot be asked about is skipped) or "local" (... run on
#: this node then). Needs a group in a fleet (docs/fleet.md).
FleetUnique = Union[bool, str]


def _automate(target: Target, add: Callable[[Signal], Any]) -> Callable[[Callable], Callable]:
    if isinstance(target, Signal):
        add(target)
        return lambda func: func
    return Signal().register_handler(target=target, callback=add)


def _fleet(fleet_unique: FleetUnique) -> Optional[FleetUnique]:
    return fleet_unique or None


def register_timer(
    period: float, *, target: Target = None, fleet_unique: FleetUnique = False
) -> Callable[[Callable], Callable]:
    """Every ``period`` seconds (once per fleet with ``fleet_unique``: at the
    multiples of the period since the Unix epoch)."""
    return _automate(
        target, lambda sig: _core.add_timer(int(sig), float(period), fleet_unique=_fleet(fleet_unique))
    )


def register_timer_ms(
    period: int, *, target: Target = None, fleet_unique: FleetUnique = False
) -> Callable[[Callable], Callable]:
    """Every ``period`` milliseconds."""
    return _automate(
        target, lambda sig: _core.add_timer(int(sig), period / 1000.0, fleet_unique=_fleet(fleet_unique))
    )


def register_timer_rb(
    period: float, repeat: Optional[int] = None, *, target: Target = None, fleet_unique: FleetUnique = False
) -> Callable[[Callable], Callable]:
    """Every ``period`` seconds, ``repeat`` times (None: for ever)."""
    return _automate(
        target,
        lambda sig: _core.add_rb_timer(int(sig), float(period), repeat or None, fleet_unique=_fleet(fleet_unique)),
    )


def register_cron(
    weekday: Optional[int] = None,
    month: Optional[int] = None,
    day: Optional[int] = None,
    hour: Optional[int] = None,
    minute: Optional[int] = None,
    *,
    target: Target = None,
    fleet_unique: FleetUnique = False,
) -> Callable[[Callable], Callable]:
    """In every local minute matching; None is every value, ``-N`` every N
    (uWSGI's integers; weekday 0 or 7 is Sunday). ``fleet_unique``: once per
    fleet (docs/fleet.md)."""
    fields = tuple(-1 if v is None else int(v) for v in (minute, hour, day, month, weekday))
    return _automate(target, lambda sig: _core.add_cron(int(sig), fields, fleet_unique=_fleet(fleet_unique)))

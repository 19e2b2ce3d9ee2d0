"""uwsgiconf's ``runtime.signals``, on flare.

The names and behaviour of uwsgiconf (``Signal``, ``SignalDescription``,
``REGISTERED_SIGNALS``, ``get_available_num``, ``get_last_received``), with
flare's guarantees: ``Signal()`` reserves its number atomically in the
master, a bad target fails at registration, and ``send()`` never drops.
"""

from typing import Any, Callable, Dict, List, NamedTuple, Optional, Union

from .. import _core, _flare
from .._flare import NoSignalAvailable
from .mules import Farm, Mule

__all__ = [
    "Signal",
    "SignalDescription",
    "REGISTERED_SIGNALS",
    "registry_signals",
    "get_available_num",
    "get_last_received",
    "Mule",
    "Farm",
    "NoSignalAvailable",
]


class SignalDescription(NamedTuple):
    """A registration: number, target, function."""

    num: int
    target: str
    func: Callable


#: Registrations this process made or inherited, by number.
REGISTERED_SIGNALS: Dict[int, SignalDescription] = {}

#: The same registrations, in registration order (older uwsgiconf name).
registry_signals: List[SignalDescription] = []


def get_available_num() -> int:
    """The first signal number neither registered nor reserved; raises
    :class:`NoSignalAvailable` when all 256 are taken."""
    return _core.available()


def get_last_received() -> "Signal":
    """The last signal received (``Signal(0)`` before the first, as uwsgiconf)."""
    num = _flare.last_received() or 0
    desc = REGISTERED_SIGNALS.get(num)
    return Signal(num) if desc is None else Signal(desc.num)


TypeTarget = Union[None, str, Mule, Farm]


def _target_text(target: TypeTarget) -> str:
    if target is None or target == "":
        return "worker"
    if isinstance(target, Mule):
        return f"mule{target.id}"
    if isinstance(target, Farm):
        return f"farm_{target.name}"
    return str(target)


class Signal:
    """A signal number from 0 to 255. ``Signal()`` picks the first free
    number and reserves it in the master, so no other process takes it."""

    __slots__ = ["num"]

    def __init__(self, num: Optional[int] = None):
        self.num = _core.reserve() if num is None else int(num)
        if not 0 <= self.num <= 255:
            raise ValueError(f"signal number {self.num} is out of range 0-255")

    def __int__(self) -> int:
        return self.num

    def __repr__(self) -> str:
        return f"Signal({self.num})"

    def __call__(self, func: Callable) -> Callable:
        """Use as a decorator: registers ``func`` on the default target."""
        return self.register_handler()(func)

    @property
    def registered(self) -> bool:
        """Whether the number is registered anywhere in the group."""
        return _core.registered(self.num)

    def register_handler(
        self,
        *,
        target: TypeTarget = None,
        callback: Optional[Callable[["Signal"], Any]] = None,
    ) -> Callable[[Callable], Callable]:
        """Decorator registering a function as this signal's handler on
        ``target`` (default ``worker``; also a :class:`Mule` or :class:`Farm`).
        The function receives the signal number. ``callback(signal)`` runs
        once the registration is in place."""
        text = _target_text(target)

        def wrapper(func: Callable) -> Callable:
            _core.register(self.num, text, func)
            desc = SignalDescription(self.num, text, func)
            REGISTERED_SIGNALS[self.num] = desc
            registry_signals.append(desc)
            if callback is not None:
                callback(self)
            return func

        return wrapper

    def send(self, *, remote: Optional[str] = None) -> None:
        """Raises the signal (on the node at ``remote``: ``ValueError`` if it
        rejects it, ``OSError`` if it cannot be reached)."""
        if remote is None:
            _core.send(self.num)
        else:
            _flare.send_remote(remote, self.num)

    def wait(self) -> None:
        """Blocks until this process has received the signal and run its
        handler (``SystemError`` if it cannot wait)."""
        _flare.wait(self.num)

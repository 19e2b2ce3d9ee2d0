"""Mules and farms (uwsgiconf ``runtime.mules``): signal targets, and their
messages (bounded mailboxes: a sender waits while one is full)."""

import pickle
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

_offloaded: Dict[str, Callable[..., Any]] = {}


def _uwsgi():
    from .. import uwsgi

    return uwsgi


def _decode(value: Any) -> Any:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


class Mule:
    """A mule (``Mule(2)`` is target ``mule2``; ``Mule(0)`` the first
    available mule)."""

    __slots__ = ["id"]

    def __init__(self, id: int):
        self.id = id

    def __str__(self) -> str:
        return f"{self.id}"

    def __repr__(self) -> str:
        return f"Mule({self.id})"

    def offload(self) -> Callable[[Callable[..., Any]], Callable[..., bool]]:
        """Decorator: calling the function sends its arguments to this mule,
        which runs it (as uwsgiconf's ``Mule.offload``)."""
        return _offload(self)

    @classmethod
    def get_current_id(cls) -> int:
        """This mule's id, 0 when not a mule."""
        return _uwsgi().mule_id()

    @classmethod
    def get_current(cls) -> Optional["Mule"]:
        """This mule, None when not a mule."""
        mid = cls.get_current_id()
        return Mule(mid) if mid else None

    @classmethod
    def get_message(
        cls, *, signals: bool = True, farms: bool = False, buffer_size: int = 65536, timeout: int = -1
    ) -> Any:
        """Waits for a message for this mule and returns it (str when it is
        UTF-8); None when a signal was handled meanwhile (``signals``)."""
        return _decode(_uwsgi().mule_get_msg(signals, farms, buffer_size, timeout))

    def send(self, message: Union[str, bytes]) -> bool:
        """Sends ``message`` to this mule (0: any mule); waits while its
        mailbox is full."""
        return _uwsgi().mule_msg(message, self.id)


class Farm:
    """A farm of mules (``Farm('reports')`` is target ``farm_reports``)."""

    __slots__ = ["name", "mules"]

    def __init__(self, name: str, *, mules: Optional[List[int]] = None):
        self.name = name
        self.mules = tuple(Mule(m) for m in mules or [])

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Farm({self.name!r})"

    @classmethod
    def get_farms(cls) -> List["Farm"]:
        """The group's farms, with their mules."""
        out = []
        for spec in _uwsgi().opt.get(b"farm", []):
            name, _, ids = _decode(spec).partition(":")
            out.append(Farm(name, mules=[int(m) for m in ids.split(",") if m]))
        return out

    def offload(self) -> Callable[[Callable[..., Any]], Callable[..., bool]]:
        """Decorator: calling the function sends its arguments to one mule
        of this farm, which runs it."""
        return _offload(self)

    @property
    def is_mine(self) -> bool:
        """Whether this mule belongs to this farm."""
        return _uwsgi().in_farm(self.name)

    @classmethod
    def get_message(cls) -> Any:
        """Waits for a message for one of this mule's farms."""
        return _decode(_uwsgi().farm_get_msg())

    def send(self, message: Union[str, bytes]) -> None:
        """Sends ``message`` to one mule of this farm."""
        return _uwsgi().farm_msg(self.name, message)


def _dispatch(message: bytes) -> Any:
    """The mule message hook for offloaded calls; other messages go to the
    hook installed before (uwsgidecorators' ``@mulefunc``), if any."""
    try:
        loaded = pickle.loads(message)
    except Exception:
        loaded = None
    if isinstance(loaded, tuple) and len(loaded) == 4 and loaded[0] == "flare-offload":
        _, name, args, kwargs = loaded
        return _offloaded[name](*args, **kwargs)
    if _previous[0] is not None:
        return _previous[0](message)
    return None


_previous: List[Optional[Callable[[bytes], Any]]] = [None]


def _offload(where: Union[Mule, Farm]) -> Callable[[Callable[..., Any]], Callable[..., bool]]:
    def decorate(func: Callable[..., Any]) -> Callable[..., bool]:
        uwsgi = _uwsgi()
        hook = getattr(uwsgi, "mule_msg_hook", None)
        if hook is not _dispatch:
            _previous[0] = hook
            uwsgi.mule_msg_hook = _dispatch
        name = f"{func.__module__}.{func.__qualname__}"
        _offloaded[name] = func

        def send(*args: Any, **kwargs: Any) -> bool:
            message = pickle.dumps(("flare-offload", name, args, kwargs))
            if isinstance(where, Farm):
                where.send(message)
                return True
            return where.send(message)

        send.__wrapped__ = func  # type: ignore[attr-defined]
        return send

    return decorate


TypeMuleFarm = Union[str, int, Mule, Farm]

__all__: Tuple[str, ...] = ("Mule", "Farm", "TypeMuleFarm")

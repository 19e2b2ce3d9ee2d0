"""Mules and farms as signal targets (uwsgiconf ``runtime.mules``)."""


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

    @classmethod
    def get_current_id(cls) -> int:
        """This mule's id, 0 when not a mule."""
        from .. import uwsgi

        return uwsgi.mule_id()


class Farm:
    """A farm of mules (``Farm('reports')`` is target ``farm_reports``)."""

    __slots__ = ["name"]

    def __init__(self, name: str):
        self.name = name

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Farm({self.name!r})"

"""uwsgiconf's ``runtime.monitoring``, on flare."""

import os
from typing import Callable

from .. import _core
from .scheduling import Target, _automate


def register_file_monitor(filename: str, *, target: Target = None) -> Callable[[Callable], Callable]:
    """When the file or directory ``filename`` changes (it may not exist
    yet: it fires when it appears)."""
    return _automate(target, lambda sig: _core.add_file_monitor(int(sig), os.fspath(filename)))

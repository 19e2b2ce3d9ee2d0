"""Makes ``import uwsgi`` give flare's compatibility module (flare.uwsgi)
where no real ``uwsgi`` module exists.

Loaded at interpreter start by ``flare_signals.pth`` (site-packages), so it
stays tiny: it imports nothing of flare until ``import uwsgi`` runs. The
finder sits at the end of ``sys.meta_path``: a real uWSGI (its built-in
module) or any ``uwsgi`` module on ``sys.path`` wins. ``FLARE_UWSGI_ALIAS=0``
turns it off. See docs/attach.md ("import uwsgi").
"""

import os
import sys


class _UwsgiAlias:
    """A meta-path finder for the one name ``uwsgi``."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name != "uwsgi" or path is not None:
            return None
        import importlib.util

        return importlib.util.spec_from_loader("uwsgi", cls)

    @staticmethod
    def create_module(spec):
        import flare.uwsgi

        return flare.uwsgi

    @staticmethod
    def exec_module(module):
        # flare.uwsgi is already initialised; importing it under a second
        # name must not run it again.
        return None


def install():
    """Appends the finder once (idempotent)."""
    if os.environ.get("FLARE_UWSGI_ALIAS", "1") == "0":
        return
    if not any(f is _UwsgiAlias for f in sys.meta_path):
        sys.meta_path.append(_UwsgiAlias)


install()

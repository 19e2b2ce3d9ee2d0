"""The ``flare`` command, installed on PATH with the package: the same
command as ``cargo install flare-signals-cli`` gives (stats, top, ctl,
signal, demo), run from the extension module."""

import sys

from . import _flare


def main() -> int:
    """Runs ``flare`` with this process's arguments; returns its exit status."""
    return _flare.cli_main(["flare", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())

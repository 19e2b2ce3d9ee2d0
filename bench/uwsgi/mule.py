"""uWSGI mule script (``--mule=mule.py``): runs the scenario's sender.

``flarebench`` was imported by the master before the fork, so this import
finds the master's module, its registered handlers and its shared board.
"""

import flarebench

flarebench.mule_main()

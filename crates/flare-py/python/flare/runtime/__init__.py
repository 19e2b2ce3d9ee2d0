"""uwsgiconf's runtime API (``uwsgiconf.runtime``), on flare: ``signals``,
``scheduling``, ``monitoring`` and ``mules`` with the same names."""

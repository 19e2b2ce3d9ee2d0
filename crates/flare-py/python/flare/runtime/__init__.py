"""uwsgiconf's runtime API (``uwsgiconf.runtime``), on flare: ``signals``,
``scheduling``, ``monitoring`` and ``mules`` (targets, messages,
``offload``) with the same names."""

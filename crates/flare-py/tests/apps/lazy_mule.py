"""A mule entry module (``--mule-entry lazy_mule:main``) with work at import
time: it must be imported in the mule only, never in the master."""

import os

import flare

_role, _id, _ = flare.whoami() or ("outside", 0, 0)
os.write(1, f"RAN imported {_role}{_id}\n".encode())


def main():
    os.write(1, f"RAN entry {_role}{_id}\n".encode())
    open(os.path.join(os.environ["FLARE_TEST_DIR"], "lazy-ran"), "w").close()
    flare.serve_forever()

"""A uWSGI programmed mule (``--mule programmed_mule.py``): runs as
__main__ in its mule; waits for the other mule's entry, then stops."""

import os
import time

import flare

DIR = os.environ["FLARE_TEST_DIR"]
role, mid, _ = flare.whoami()
os.write(1, f"RAN script:{__name__} {role}{mid}\n".encode())
deadline = time.monotonic() + 50
while not os.path.exists(os.path.join(DIR, "lazy-ran")):
    assert time.monotonic() < deadline, "the mule entry never ran"
    time.sleep(0.05)
print("DONE", flush=True)
flare.stop()
flare.serve_forever()

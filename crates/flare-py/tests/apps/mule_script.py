"""A programmed mule (uWSGI ``mule = mule_script.py``): runs as __main__ in
mule 1 only; waits until every source of the config has fired, then stops."""

import os
import time

import flare
import uwsgi

DIR = os.environ["FLARE_TEST_DIR"]
role, mid, pid = flare.whoami()
os.write(1, f"RAN script:{__name__}:{pid != uwsgi.masterpid()} {role}{mid}\n".encode())
open(os.path.join(DIR, "touched"), "w").close()
uwsgi.signal(33)
deadline = time.monotonic() + 50
want = ["timer", "rbtimer", "touch", "farm", "cron"]
while not all(os.path.exists(os.path.join(DIR, f"ran-{w}")) for w in want):
    assert time.monotonic() < deadline, [w for w in want if not os.path.exists(os.path.join(DIR, f"ran-{w}"))]
    time.sleep(0.05)
print("DONE", flush=True)
flare.stop()
flare.serve_forever()

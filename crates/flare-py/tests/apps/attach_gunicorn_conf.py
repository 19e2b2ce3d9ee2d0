"""gunicorn.conf.py of the attach test: flare's hook, plus a line per
attached worker for the test to wait on."""

import os
import time

from flare.gunicorn import post_worker_init as flare_post_worker_init


def post_worker_init(worker):
    flare_post_worker_init(worker)
    import uwsgi

    with open(os.path.join(os.environ["FLARE_TEST_DIR"], "events.txt"), "a") as f:
        f.write(f"attached {uwsgi.worker_id()} {os.getpid()} {time.time():.3f}\n")

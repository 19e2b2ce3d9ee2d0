"""The app module of a uWSGI config (``module = ini_app:application``):
its handlers are registered in the master at import; each run leaves a
marker file and prints `RAN <what> <process>`."""

import os

import flare
import uwsgi

DIR = os.environ["FLARE_TEST_DIR"]


def note(what):
    role, pid_id, _ = flare.whoami()
    os.write(1, f"RAN {what} {role}{pid_id}\n".encode())
    open(os.path.join(DIR, f"ran-{what}"), "w").close()


uwsgi.register_signal(30, "workers", lambda n: note("timer"))
uwsgi.register_signal(31, "mule2", lambda n: note("rbtimer"))
uwsgi.register_signal(32, "spooler", lambda n: note("touch"))
uwsgi.register_signal(33, "farm_pool", lambda n: note("farm"))


def application(environ, start_response):  # a WSGI app: flare never calls it
    raise AssertionError("flare serves no HTTP")

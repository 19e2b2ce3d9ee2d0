"""An ASGI app using uwsgidecorators, for uvicorn and granian: it joins the
flare group at the end of its import (both servers import the app in each
worker process), or in the lifespan startup with FLARE_ATTACH_AT=lifespan.
Either way after its registrations, which are recorded until then: every
worker then registers the same numbers (uwsgidecorators picks free ones)."""

import os

import uwsgi
from attach_events import log
from uwsgidecorators import signal, timer

import flare


@timer(1)
def tick(num):
    log("tick")


@signal(17, target="workers")
def everyone(num):
    log("workers")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if os.environ.get("FLARE_ATTACH_AT") == "lifespan":
                    flare.attach()
                log("attached")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope.get("path", "/")
    if path.startswith("/raise/"):
        uwsgi.signal(int(path[len("/raise/"):]))
    body = f"worker {uwsgi.worker_id()} pid {os.getpid()}\n".encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})


if os.environ.get("FLARE_ATTACH_AT", "import") == "import":
    flare.attach()

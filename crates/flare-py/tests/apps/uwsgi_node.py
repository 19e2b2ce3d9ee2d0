"""A uWSGI node (run by uWSGI itself) with a Python handler for signal 17."""

import uwsgi


def handler(num):
    print("NODE HANDLER ran", num, flush=True)


uwsgi.register_signal(17, "worker", handler)
print("NODE READY", flush=True)


def application(env, start_response):
    start_response("200 OK", [])
    return [b"ok"]

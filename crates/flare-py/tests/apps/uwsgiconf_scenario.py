"""uwsgiconf's own signal test scenario, in a real flare worker.

As uwsgiconf's test: get_available_num 0 then 1, register, send, wait,
re-register in the same process, results in order. Signals are
asynchronous in a real group (in uWSGI too), so the second send is also
followed by wait() before the results are checked (uwsgiconf's test asserts
right after send, which only its synchronous stub allows).
"""

import flare
from uwsgiconf.runtime.signals import Signal, get_available_num, get_last_received


def main():
    import uwsgi

    assert not uwsgi.is_stub, "uwsgiconf must use the real uwsgi module"
    try:
        assert get_available_num() == 0
        assert get_last_received().num == 0

        sig = Signal()
        results = []

        @sig.register_handler()
        def signalled(sig):
            results.append("signalled")

        assert get_available_num() == 1

        sig.send()
        sig.wait()

        @sig.register_handler()
        def my(sig):
            results.append("my")

        sig.send()
        sig.wait()
        assert results == ["signalled", "my"], results
        assert get_last_received().num == int(sig)
        print("SCENARIO OK", flush=True)
    except Exception as e:  # reported to the test, which fails
        print(f"SCENARIO FAILED {e!r}", flush=True)
    flare.stop()
    flare.serve_forever()

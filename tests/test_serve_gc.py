"""serve() keeps the start-up heap out of the garbage collector's full passes (gc.freeze)."""
import gc
import threading

from appliance.app import serve


def test_serve_freezes_what_start_up_built():
    stop = threading.Event()
    frozen = []

    class App:
        failure = None

        def start(self):
            self.built = [[] for _ in range(1000)]  # start-up objects

        def stop(self):
            frozen.append(gc.get_freeze_count())

    gc.unfreeze()
    try:
        threading.Timer(0.2, stop.set).start()
        serve(App(), stop)
    finally:
        gc.unfreeze()
    assert frozen and frozen[0] >= 1000

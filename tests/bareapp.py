"""A WSGI app that imports nothing of its own: it answers with its worker's collector state, then
the names of the modules the worker holds.

A worker is forked from the supervisor, so what it holds is what the supervisor imported before
the fork, plus what the worker imported itself (tests/integration/test_startup_imports.py).
"""

import gc
import sys


def app(environ, start_response):
    lines = [f"gc {int(gc.isenabled())} {gc.get_threshold()[0]} {gc.get_freeze_count()}", *sorted(sys.modules)]
    body = "\n".join(lines).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

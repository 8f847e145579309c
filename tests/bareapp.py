"""A WSGI app that imports nothing: it answers with the names of the modules its worker holds.

A worker is forked from the supervisor, so what it holds is what the supervisor imported before
the fork, plus what the worker imported itself (tests/integration/test_startup_imports.py).
"""

import sys


def app(environ, start_response):
    body = "\n".join(sorted(sys.modules)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

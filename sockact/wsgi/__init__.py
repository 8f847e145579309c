"""PEP 3333 on a socket, in a worker: one connection the WSGI runner drives (server.py), the environ,
start_response and wsgi.input (environ.py), and blocking socket I/O with timeouts (wire.py)."""

"""The worker's connections, below both runners: the state table (states.py), the owner that keeps
each connection's state and deadlines (owner.py), and the channel to the supervisor (channel.py).
The WSGI runner (eventloop.py) and the ASGI runner (asgi/runner.py) both stand on these."""

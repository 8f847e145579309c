"""Built-in apps: the demo (``sockact.apps.demo:app``, the default ``app``) and hello world as WSGI and
ASGI (hello.py). metrics.py is no app: it writes the Prometheus exposition the supervisor answers
its metrics listener with."""

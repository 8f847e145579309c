"""Built-in WSGI apps."""

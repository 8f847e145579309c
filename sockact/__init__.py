"""sockact: a systemd-native, socket-activated process supervisor for WSGI and ASGI apps."""

__version__ = "0.1.0"

"""sockact: a systemd-native, socket-activated process supervisor for WSGI apps."""

__version__ = "0.1.0"

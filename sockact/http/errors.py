"""Errors of the HTTP layer. Each carries its outcome: the status to answer with.

A ``ProtocolError`` means the client broke HTTP/1.1 (or one of sockact's limits);
the connection is answered with ``status`` and closed. An ``InvalidResponse``
means the application broke PEP 3333; the client gets a 500.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """The client sent something sockact will not serve; answer ``status`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


class InvalidResponse(ValueError):
    """The application called start_response (or wrote) in a way PEP 3333 forbids."""

    status = 500

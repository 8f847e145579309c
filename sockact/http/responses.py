"""What an app may answer, checked the same way for WSGI and ASGI (PEP 3333 and RFC 9110)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sockact.errors import InvalidResponse
from sockact.http.rules import is_token

# RFC 9110 7.6.1 plus those wsgiref.util.is_hop_by_hop names: an application may not set them.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "trailers", "transfer-encoding", "upgrade"})
# A field value may hold HTAB, SP, VCHAR and obs-text (RFC 9110 5.5); translate() deletes those.
_VALUE_OK = b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))

T = TypeVar("T")
_UNSEEN = object()  # no status is equal to it


def remembering(check: Callable[[Any, Any], T], copy: Callable[[Any], Any]) -> Callable[[Any, Any], T]:
    """``check(status, headers)``, which remembers its last answer: an app answers the same way again and
    again, and one compare in C costs less than the checks. ``copy`` keeps what was checked as the app
    cannot change it later (None: not kept). The answer is never to be changed: the same one is given again.
    The one cache of checked responses, for both interfaces (each its own ``check``)."""
    last: tuple[Any, Any, Any] = (_UNSEEN, None, None)

    def checked(status: Any, headers: Any) -> T:
        nonlocal last
        seen = last  # one reference, replaced whole: app threads check at once
        if status == seen[0] and type(status) is type(seen[0]) and headers == seen[1]:
            return seen[2]  # type: ignore[no-any-return]
        answer = check(status, headers)
        last = (status, copy(headers), answer)
        return answer

    return checked


def validate_response(status: Any, headers: Any) -> tuple[str, list[tuple[str, str]]]:
    """Check a status and headers per PEP 3333 and RFC 9110: (status, headers to give the engine).

    "Connection: close" passes (the engine honours it and writes its own Connection field);
    every other hop-by-hop field is an error, since the engine owns the framing. Copies of
    one Content-Length become one; differing ones are an error.
    """
    if type(status) is not str or status not in _CHECKED_STATUSES:
        if type(status) is str and len(status) == 3 and status.isdigit() and status.isascii() and status >= "200":
            # Its code alone, as gunicorn takes it: the status line needs the space, and gets the usual phrase.
            # (http.HTTPStatus is imported only here: a start imports nothing its requests do not use.)
            from http import HTTPStatus
            try:
                status = f"{status} {HTTPStatus(int(status)).phrase}"
            except ValueError:  # a code it does not know: an empty phrase
                status += " "
        # A 1xx is never a final response (RFC 9110 15.2): its client would read on, or take a 101 for a switch.
        if (not isinstance(status, str) or len(status) < 4 or status[3] != " " or not status[:3].isdigit()
                or int(status[:3]) < 200 or _bad_value(status)):
            raise InvalidResponse(f"invalid status {status!r}: expected a str like '200 OK'")
        if type(status) is str and len(_CHECKED_STATUSES) < _CHECKED_MAX:
            _CHECKED_STATUSES.add(status)
    if not isinstance(headers, list):
        raise InvalidResponse(f"response headers must be a list, not {type(headers).__name__}")
    out: list[tuple[str, str]] = []
    length: int | None = None
    for item in headers:
        if not (isinstance(item, tuple) and len(item) == 2 and type(item[0]) is str and type(item[1]) is str):
            raise InvalidResponse(f"response header {item!r} is not a (str, str) tuple")
        known = _CHECKED_FIELDS.get(item)
        if known is not None:
            # Passed every check below before: an ordinary field (-1), or a Content-Length of that value.
            if known >= 0:
                if length is not None:
                    if known != length:
                        raise InvalidResponse(f"invalid Content-Length {item[1]!r}")
                    continue  # an identical copy: send one
                length = known
            out.append(item)
            continue
        name, value = item
        if not name.isascii() or not is_token(name.encode("ascii")):
            raise InvalidResponse(f"invalid response header name {name!r}")
        if _bad_value(value):
            raise InvalidResponse(f"invalid value for response header {name!r}")
        lower = name.lower()
        if lower in HOP_BY_HOP:
            if lower == "connection" and value.strip().lower() == "close":
                out.append((name, value))
                continue
            raise InvalidResponse(f"hop-by-hop response header {name!r} is not allowed (PEP 3333)")
        if lower == "content-length":
            value = value.strip()
            if not value.isdigit() or not value.isascii() or (length is not None and int(value) != length):
                raise InvalidResponse(f"invalid Content-Length {value!r}")
            if length is not None:
                continue  # an identical copy: send one
            length = int(value)
            if value == item[1] and len(_CHECKED_FIELDS) < _CHECKED_MAX:
                _CHECKED_FIELDS[item] = length
        elif lower not in HOP_BY_HOP and len(_CHECKED_FIELDS) < _CHECKED_MAX:
            _CHECKED_FIELDS[item] = -1
        out.append((name, value))
    return status, out


# Statuses and (name, value) fields that passed validate_response: an app sends the same few again
# and again, and a look-up is cheaper than the checks. A field maps to -1, or for a Content-Length
# to its length (copies must agree); hop-by-hop fields are never kept. Bounded, so varying values
# cannot inflate it.
_CHECKED_STATUSES: set[str] = set()
_CHECKED_FIELDS: dict[tuple[str, str], int] = {}
_CHECKED_MAX = 1024
# A WSGI app's (status, headers), checked; a copy of the list is kept, its (str, str) items cannot change.
check_response = remembering(validate_response, list)


def _bad_value(value: str) -> bool:
    try:
        return bool(value.encode("latin-1").translate(None, _VALUE_OK))
    except UnicodeEncodeError:
        return True


def length_missed(engine: Any) -> tuple[str, int, int] | None:
    """When a response's body missed its Content-Length, what the operator is told, as (the line's format,
    two figures; the connection's id and the request go in front and behind), else None; by WSGI and ASGI
    alike. Short of it: its client waits for the rest and gets a closed connection instead. Past it: the
    rest is dropped (its client would read it as the next response) and the connection closes."""
    left = engine.length_left
    if left:
        return SHORT_OF_ITS_LENGTH, engine.body_sent, engine.body_sent + left
    if engine.dropped:
        return PAST_ITS_LENGTH, engine.dropped, engine.body_sent
    return None


SHORT_OF_ITS_LENGTH = "conn %d: the application sent %d of the %d body bytes its Content-Length promised, to %s"
PAST_ITS_LENGTH = ("conn %d: the application gave %d body bytes more than the %d its Content-Length promised, "
                   "dropped, to %s")

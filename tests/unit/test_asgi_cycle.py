"""asgi/cycle.HttpCycle against the ASGI HTTP spec's message orders, one test per rule, with no socket.

The spec: https://asgi.readthedocs.io/en/latest/specs/www.html. The HTTP engine is the real,
sans-I/O one; the connection around it is a fake (``Client``) that keeps what is written and
gives the engine what the test says the client sends, one piece per wait for input."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import pytest

from sockact.asgi.cycle import DISCONNECT, ClientDisconnected, HttpCycle
from sockact.http import Limits
from sockact.http.engine import Connection
from sockact.ipc.scoreboard import Scoreboard, SlotWriter

Message = dict[str, Any]
App = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

GET = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
START = {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
WAIT = 5.0  # seconds a test's cycle may take at most before the test fails instead of hanging


class Client:
    """The parts of asgi/conn.AsgiConnection a cycle uses: the engine is real, the socket is two lists.
    ``later`` is what the client sends after its first bytes, one piece each time the cycle waits
    for input (b"": it closes its side); then it sends nothing until it is woken."""

    def __init__(self, first: bytes, *later: bytes) -> None:
        self.engine = Connection(Limits())
        self.engine.receive_data(first)
        self.later = list(later)
        self.msg = SimpleNamespace(conn_id=1)
        self.site = SimpleNamespace(io_timeout=WAIT)
        self.sent = bytearray()
        self.interim = bytearray()
        self.gone = self.eof = self.closed = False
        self.flushed = self.writable = True
        self.out = self.queued = b""  # nothing waits for the client
        self.waits = 0
        self._woken: asyncio.Future[None] | None = None
        self.call_line: SlotWriter | None = None  # the call's scoreboard line, if a test gives it one
        self.written = 0  # bytes written in all, as the real connection counts them

    def write(self, *parts: bytes, interim: bool = False) -> None:
        if not self.gone:
            data = b"".join(parts)
            self.written += len(data)
            (self.interim if interim else self.sent).extend(data)

    async def wait_input(self, timeout: float | None = None, lose: bool = True) -> None:
        self.waits += 1
        if self.later:
            piece = self.later.pop(0)
            self.eof = not piece
            self.engine.receive_data(piece)
            return
        await self._wait_for_wake()

    async def wait_woken(self) -> None:
        if self.eof:
            await self._wait_for_wake()  # no more input can come
        else:
            await self.wait_input()

    async def _wait_for_wake(self) -> None:
        self._woken = asyncio.get_running_loop().create_future()
        await self._woken

    @property
    def waiting(self) -> list[asyncio.Future[None]]:
        """The tasks waiting for input, as the real connection's list: a cycle wakes them only if any."""
        return [self._woken] if self._woken is not None and not self._woken.done() else []

    def wake(self) -> None:
        if self._woken is not None and not self._woken.done():
            self._woken.set_result(None)

    def leave(self) -> None:
        """The client is gone (a write failed)."""
        self.gone = True
        self.wake()

    def resume_reading(self) -> None:
        pass

    async def drain(self, high: int = 0) -> None:
        pass


def cycle_for(client: Client, stopping: bool = False) -> HttpCycle:
    request = client.engine.next_event()
    cycle = HttpCycle(client)  # type: ignore[arg-type]
    cycle.begin(request, {"type": "http"}, stopping, time.monotonic())
    return cycle


def serve(app: App, first: bytes = GET, *later: bytes) -> tuple[bool, Client]:
    """Run one cycle of ``app``: whether the connection persists, and the client."""
    client = Client(first, *later)
    persists = asyncio.run(asyncio.wait_for(cycle_for(client).run(app), WAIT))
    return persists, client


def response(client: Client) -> tuple[str, dict[str, str], bytes]:
    """The status line, the fields (lower-cased names) and the body as sent."""
    head, _, body = bytes(client.sent).partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines)
    return status, {name.lower(): value for name, value in fields.items()}, body


def sends(*messages: Message) -> App:
    """An app that sends ``messages`` in order, and reads nothing."""
    async def app(scope: Message, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)
    return app


# -- receive: the request body


def test_a_request_without_a_body_is_one_empty_http_request_with_more_body_false():
    got: list[Message] = []

    async def app(scope, receive, send):
        got.append(await receive())
        await send(START)
        await send({"type": "http.response.body", "body": b"ok"})

    persists, _ = serve(app)
    assert got == [{"type": "http.request", "body": b"", "more_body": False}]
    assert persists


def test_a_body_in_pieces_comes_as_http_request_messages_with_more_body_until_the_last():
    got: list[Message] = []

    async def app(scope, receive, send):
        while True:
            got.append(await receive())
            if not got[-1]["more_body"]:
                break
        await send(START)
        await send({"type": "http.response.body"})

    serve(app, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc", b"def", b"ghi")
    assert [(m["body"], m["more_body"]) for m in got] == [(b"abc", True), (b"def", True), (b"ghi", False)]
    assert all(m["type"] == "http.request" for m in got)


def test_100_continue_goes_out_when_the_app_first_asks_for_the_body_and_not_before():
    seen: list[bytes] = []

    async def app(scope, receive, send):
        seen.append(bytes(client.interim))
        await receive()
        seen.append(bytes(client.interim))
        await send(START)
        await send({"type": "http.response.body"})

    client = Client(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n", b"ok")
    asyncio.run(asyncio.wait_for(cycle_for(client).run(app), WAIT))
    assert seen == [b"", b"HTTP/1.1 100 Continue\r\n\r\n"]


def test_receive_after_the_body_waits_for_the_response_to_complete_then_says_http_disconnect():
    order: list[str] = []

    async def listener(receive):
        order.append((await receive())["type"])
        order.append((await receive())["type"])  # the body is read: this one waits

    async def app(scope, receive, send):
        task = asyncio.ensure_future(listener(receive))
        for _ in range(3):
            await asyncio.sleep(0)
        order.append("sending")
        await send(START)
        await send({"type": "http.response.body", "body": b"ok"})
        await asyncio.wait_for(task, WAIT)

    serve(app)
    assert order == ["http.request", "sending", "http.disconnect"]


def test_receive_after_the_client_has_gone_says_http_disconnect():
    got: list[Message] = []
    client = Client(GET)

    async def app(scope, receive, send):
        got.append(await receive())
        asyncio.get_running_loop().call_soon(client.leave)  # a write fails, or the client resets
        got.append(await receive())

    persists = asyncio.run(asyncio.wait_for(cycle_for(client).run(app), WAIT))
    assert got[1] == DISCONNECT
    assert not persists and not client.sent  # no response, and no 500 to a client that left


def test_a_half_close_tells_a_listener_disconnect_and_the_answer_still_goes_out():
    """A FIN is all a client's close() sends: an app listening for the client to go (a long poll)
    hears http.disconnect at it. But the client may only have half-closed, and still read: what the
    app sends is written, as WSGI's answer would be."""
    order: list[str] = []

    async def app(scope, receive, send):
        await receive()
        listener = asyncio.ensure_future(receive())
        for _ in range(5):
            await asyncio.sleep(0)  # the client half-closes meanwhile
        order.append((await listener)["type"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"still read"})

    _, client = serve(app, GET, b"")
    assert client.eof
    assert order == ["http.disconnect"]
    assert response(client)[2] == b"still read"


def test_a_body_the_client_cut_short_is_answered_400():
    async def app(scope, receive, send):
        while (await receive())["type"] == "http.request":
            pass

    persists, client = serve(app, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc", b"")
    assert response(client)[0] == "HTTP/1.1 400 Bad Request"
    assert not persists


def test_after_sockact_answered_in_the_apps_stead_the_apps_own_response_is_dropped():
    async def app(scope, receive, send):
        while (await receive())["type"] == "http.request":
            pass
        await send(START)  # too late: the 400 went out
        await send({"type": "http.response.body", "body": b"ok"})

    persists, client = serve(app, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc", b"")
    status, _, body = response(client)
    assert status == "HTTP/1.1 400 Bad Request" and b"ok" not in body
    assert not persists


# -- send: http.response.start, then http.response.body


def test_the_head_waits_for_the_first_body_message():
    sent_after_start: list[bytes] = []

    async def app(scope, receive, send):
        await send(START)
        sent_after_start.append(bytes(client.sent))
        await send({"type": "http.response.body", "body": b"hello"})

    client = Client(GET)
    asyncio.run(asyncio.wait_for(cycle_for(client).run(app), WAIT))
    assert sent_after_start == [b""]
    status, fields, body = response(client)
    assert status == "HTTP/1.1 200 OK" and fields["content-type"] == "text/plain" and body == b"hello"


def test_a_whole_body_gets_a_content_length():
    _, client = serve(sends(START, {"type": "http.response.body", "body": b"hello"}))
    _, fields, body = response(client)
    assert fields["content-length"] == "5" and "transfer-encoding" not in fields and body == b"hello"


def test_more_body_streams_the_body_chunked_until_a_message_without_it():
    persists, client = serve(sends(START, {"type": "http.response.body", "body": b"he", "more_body": True},
                                   {"type": "http.response.body", "body": b"llo", "more_body": True},
                                   {"type": "http.response.body"}))
    _, fields, body = response(client)
    assert fields["transfer-encoding"] == "chunked" and body == b"2\r\nhe\r\n3\r\nllo\r\n0\r\n\r\n"
    assert persists


def test_body_and_more_body_default_to_an_empty_last_message():
    persists, client = serve(sends(START, {"type": "http.response.body"}))
    assert response(client)[1]["content-length"] == "0"
    assert persists


def test_a_complete_response_with_its_request_read_keeps_the_connection():
    persists, client = serve(sends(START, {"type": "http.response.body", "body": b"ok"}))
    assert persists and "connection" not in response(client)[1]


def _lined(app: App, first: bytes = GET, *later: bytes, before: int = 0) -> tuple[bool, Client, int, int]:
    """``serve`` with the call on a scoreboard line, begun as the runner begins it after ``before`` bytes
    written on the connection: whether it persists, the client, and the bytes written before the response
    and its length as the supervisor reads them once the response has ended, the call not yet."""
    board = Scoreboard(1)
    slot = board.allocate()
    client = Client(first, *later)
    client.written = before
    client.call_line = line = board.writer(slot, 1)
    line.begin(b"GET /", 7, client.written)
    line.responded_uncounted()
    seen: list[tuple[int, int]] = []

    async def looked(scope: Message, receive: Any, send: Any) -> None:
        await app(scope, receive, send)
        [call] = board.calls(slot)
        seen.append((call.written_before or 0, call.length))
    persists = asyncio.run(asyncio.wait_for(cycle_for(client).run(looked), WAIT))
    board.close()
    return persists, client, *seen[0]


@pytest.mark.parametrize("messages", [
    [START, {"type": "http.response.body", "body": b"ok"}],
    [START, {"type": "http.response.body", "body": b"o", "more_body": True},
     {"type": "http.response.body", "body": b"k"}],
], ids=["whole", "in pieces"])
def test_a_whole_response_on_a_persisting_connection_gives_its_line_its_length(messages):
    persists, client, before, length = _lined(sends(*messages), before=123)
    assert persists and (before, length) == (123, len(client.sent))


POST_4 = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n"


@pytest.mark.parametrize(("messages", "first"), [
    ([START, {"type": "http.response.body", "body": b"o", "more_body": True}], GET),  # not over
    ([START, {"type": "http.response.body", "body": b"ok"}], b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    ([START, {"type": "http.response.body", "body": b"ok"}], POST_4),
], ids=["cut", "connection close", "body unread"])
def test_a_response_not_whole_or_whose_connection_ends_leaves_its_length_unknown(messages, first):
    # Unknown: a worker that dies then closes the connection, as before, rather than give what follows
    # (nothing, or the rest of a body) to another worker as a request.
    assert _lined(sends(*messages), first, b"data", before=5)[2:] == (5, 0)


def test_an_app_that_ends_in_the_middle_of_its_body_leaves_the_response_cut_short():
    persists, client = serve(sends(START, {"type": "http.response.body", "body": b"part", "more_body": True}))
    assert not persists  # the client sees the cut: no last chunk follows
    assert not bytes(client.sent).endswith(b"0\r\n\r\n")


BODY = {"type": "http.response.body", "body": b"x"}


# Each case ends as a good response would, so the 500 comes from the rule broken, not a missing body.
@pytest.mark.parametrize("messages", [
    pytest.param([BODY, START, BODY], id="body before start"),
    pytest.param([START, START, BODY], id="start twice"),
    pytest.param([{**START, "trailers": True}, BODY], id="trailers, not offered"),
    pytest.param([START, {"type": "http.response.push", "path": "/"}, BODY], id="an unknown message"),
    pytest.param([{**START, "status": "200"}, BODY], id="a status that is not an int"),
    pytest.param([{**START, "status": 99}, BODY], id="a status out of range"),
    pytest.param([{**START, "headers": [("content-type", "text/plain")]}, BODY], id="headers that are not bytes"),
    pytest.param([START, {"type": "http.response.body", "body": "text"}, BODY], id="a body that is not bytes"),
    pytest.param([], id="no response at all"),
])
def test_a_message_out_of_order_or_malformed_before_the_response_began_is_a_500(messages):
    persists, client = serve(sends(*messages))
    assert response(client)[0] == "HTTP/1.1 500 Internal Server Error"
    assert not persists


def test_a_start_equal_to_the_last_one_is_answered_alike_and_one_changed_in_place_is_checked_anew():
    value = bytearray(b"text/plain")
    headers = [(b"content-type", value)]
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    body = {"type": "http.response.body", "body": b"ok"}
    for _ in range(2):
        assert response(serve(sends(start, body))[1])[1]["content-type"] == "text/plain"
    value[:] = b"text/html"  # the app's own bytes, changed in place
    assert response(serve(sends(start, body))[1])[1]["content-type"] == "text/html"
    headers.append((b"x-bad", b"a\r\nb"))  # its own list, grown with a field no response may carry
    assert response(serve(sends(start, body))[1])[0] == "HTTP/1.1 500 Internal Server Error"
    del headers[-1]
    assert response(serve(sends({**start, "status": 200.0}, body))[1])[0] == "HTTP/1.1 500 Internal Server Error"


def test_a_start_of_list_pairs_equal_to_the_last_is_answered_alike_and_a_pair_changed_in_place_is_checked_anew():
    pair = [b"content-type", b"text/plain"]  # pairs as lists, as many apps write them
    start = {"type": "http.response.start", "status": 200, "headers": [pair]}
    body = {"type": "http.response.body", "body": b"ok"}
    for _ in range(2):
        assert response(serve(sends(start, body))[1])[1]["content-type"] == "text/plain"
    pair[1] = b"a\r\nb"  # the app's own pair, changed in place to what no response may carry
    assert response(serve(sends(start, body))[1])[0] == "HTTP/1.1 500 Internal Server Error"


def test_a_body_message_after_the_response_completed_raises_and_adds_nothing():
    raised: list[Exception] = []

    async def app(scope, receive, send):
        await send(START)
        await send({"type": "http.response.body", "body": b"ok"})
        try:
            await send({"type": "http.response.body", "body": b"more"})
        except Exception as exc:
            raised.append(exc)
            raise

    persists, client = serve(app)
    assert "after the response ended" in str(raised[0])
    assert response(client)[2] == b"ok"  # the response that completed, whole; no 500 after it
    assert not persists


def test_what_send_gives_back_is_an_awaitable_for_asyncio_too_and_each_send_is_carried_out_once():
    """send() is an awaitable callable, as ASGI asks: what it gives back works wherever an awaitable does, may
    be awaited again, and the message goes out once, at the call."""
    async def app(scope, receive, send):
        await asyncio.wait_for(send(START), WAIT)
        sent = send({"type": "http.response.body", "body": b"part", "more_body": True})
        await sent
        await sent  # done: nothing more goes out
        await asyncio.ensure_future(send({"type": "http.response.body", "body": b"!"}))

    persists, client = serve(app)
    assert response(client)[2] == b"4\r\npart\r\n1\r\n!\r\n0\r\n\r\n"
    assert persists


def test_an_error_after_the_response_began_closes_the_connection_without_a_500():
    async def app(scope, receive, send):
        await send(START)
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("the app fails mid-body")

    persists, client = serve(app)
    assert response(client)[0] == "HTTP/1.1 200 OK" and b"500" not in bytes(client.sent)
    assert not persists


def test_send_after_the_client_left_raises_an_oserror():
    raised: list[BaseException] = []

    async def app(scope, receive, send):
        await send(START)
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        client.leave()
        try:
            await send({"type": "http.response.body", "body": b"more", "more_body": True})
        except OSError as exc:
            raised.append(exc)
            raise

    client = Client(GET)
    persists = asyncio.run(asyncio.wait_for(cycle_for(client).run(app), WAIT))
    assert isinstance(raised[0], ClientDisconnected)
    assert not persists


def test_hop_by_hop_fields_are_dropped_and_connection_close_ends_the_connection():
    start = {**START, "headers": [(b"Transfer-Encoding", b"chunked"), (b"Keep-Alive", b"timeout=5"),
                                  (b"Connection", b"close"), (b"X-App", b"1")]}
    persists, client = serve(sends(start, {"type": "http.response.body", "body": b"ok"}))
    _, fields, body = response(client)
    assert "transfer-encoding" not in fields and "keep-alive" not in fields
    assert fields["connection"] == "close" and fields["x-app"] == "1" and body == b"ok"
    assert not persists


def test_a_stopping_server_answers_with_connection_close():
    client = Client(GET)
    persists = asyncio.run(asyncio.wait_for(
        cycle_for(client, stopping=True).run(sends(START, {"type": "http.response.body"})), WAIT))
    assert response(client)[1]["connection"] == "close"
    assert not persists


def test_pathsend_sends_the_file_as_the_whole_body(tmp_path):
    path = tmp_path / "body.txt"
    path.write_bytes(b"from a file")
    persists, client = serve(sends(START, {"type": "http.response.pathsend", "path": str(path)}))
    _, fields, body = response(client)
    assert fields["content-length"] == str(len(b"from a file")) and body == b"from a file"
    assert persists


@pytest.mark.parametrize("path", ["relative.txt", "/nonexistent/sockact-test"], ids=["relative", "missing"])
def test_pathsend_of_a_relative_or_missing_path_is_a_500(path):
    persists, client = serve(sends(START, {"type": "http.response.pathsend", "path": path}))
    assert response(client)[0] == "HTTP/1.1 500 Internal Server Error"
    assert not persists

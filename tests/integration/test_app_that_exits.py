"""An app whose call raises SystemExit (its own sys.exit()) or KeyboardInterrupt, against the real sockact:
a 500 and a logged traceback, as for any exception, and the worker serves on with every other client it
holds. Let through, it ended a WSGI worker's loop (its client got no answer, its other clients lost) or
only the pool thread it ran on (its client never answered, no line logged), and ended an ASGI worker."""

from __future__ import annotations

import threading

from conftest import http_get


def test_a_wsgi_call_that_exits_is_a_500_on_the_loop_thread_and_on_a_pool_thread(start_sockact, tmp_path):
    server = start_sockact("testapps:exits", "--workers", "1", "--threads", "2", workers=1)
    (worker,) = server.workers()
    assert http_get(server.port, "/exit")[0] == 500  # on the loop thread, app thread 0
    assert http_get(server.port, "/interrupt")[0] == 500
    assert http_get(server.port, "/cancelled")[0] == 500
    assert http_get(server.port, "/own")[0] == 500
    # A call already runs: the next goes to a pool thread.
    started, release = tmp_path / "started", tmp_path / "release"
    slow: list[int] = []
    caller = threading.Thread(target=lambda: slow.append(
        http_get(server.port, f"/slow?s=20&started={started}&until={release}", timeout=30)[0]))
    caller.start()
    server.waiting(started.exists, "the slow call to begin")
    for path in ("/exit", "/own"):  # the thread that took it is still there for the next
        assert http_get(server.port, path)[0] == 500
    release.touch()
    caller.join(30)
    assert slow == [200]
    assert "SystemExit: 3" in server.wait_for_log("application error on GET /exit")
    assert "KeyboardInterrupt" in server.output()
    assert "CancelledError" in server.wait_for_log("application error on GET /cancelled")
    assert "OwnBaseException: a library's own BaseException" in server.wait_for_log("application error on GET /own")
    assert server.get_json("/")["pid"] == worker and server.workers() == [worker]


def test_an_asgi_call_or_session_that_exits_ends_it_alone(start_sockact):
    from websockets.exceptions import ConnectionClosedError
    from websockets.sync.client import connect

    server = start_sockact("asgiapps:exits", "--workers", "1", workers=1)
    (worker,) = server.workers()
    with connect(f"ws://127.0.0.1:{server.port}/") as other:
        other.send("hello")
        assert other.recv(timeout=10) == "hello"
        assert http_get(server.port, "/exit")[0] == 500
        assert http_get(server.port, "/interrupt")[0] == 500
        assert http_get(server.port, "/own")[0] == 500
        with connect(f"ws://127.0.0.1:{server.port}/") as ws:
            ws.send("exit")
            try:
                ws.recv(timeout=10)
                raise AssertionError("the session went on")
            except ConnectionClosedError as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 1011
        other.send("still here")  # another client's session on the same worker
        assert other.recv(timeout=10) == "still here"
    assert "SystemExit: 3" in server.wait_for_log("application error on GET /exit")
    server.wait_for_log("application error on websocket")
    assert "OwnBaseException" in server.wait_for_log("application error on GET /own")
    assert server.get_json("/")["pid"] == worker and server.workers() == [worker]

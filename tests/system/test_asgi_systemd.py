"""An ASGI app under a real systemd, on Debian's own Python: activation, the journal, lifespan at
start and stop, and a loop stuck past timeout. uvloop and wsproto are only recommended by the .deb,
so this is also asyncio's own loop serving."""

from __future__ import annotations

import re

from sysclient import Background, wait_for
from sysdeploy import Deployment, messages
from test_systemd import served_meanwhile, sockact_records, with_message_id

ASGI_APP = '''
"""An ASGI app for the system tests: lifespan, its worker's pid, an endless loop."""
import os


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started_in"] = os.getpid()
                await send({"type": "lifespan.startup.complete"})
            else:
                print(f"lifespan shutdown in {os.getpid()}", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/spin":
        while True:
            pass
    body = f"asgi pid={os.getpid()} started_in={scope['state']['started_in']}".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
'''


def serve_asgi_app(sockact: Deployment, **env: str) -> None:
    sockact.app("sockact_asgiapp", ASGI_APP)
    sockact.use_test_apps(**env)
    sockact.config('app = "sockact_asgiapp:app"\n')
    sockact.start()


def test_an_asgi_app_is_activated_logged_and_stopped_with_its_lifespan(sockact: Deployment):
    serve_asgi_app(sockact)
    response = sockact.get("/hello")
    assert response.status == 200, response
    pid, started_in = map(int, re.search(r"pid=(\d+) started_in=(\d+)", response.text).groups())
    assert pid == started_in  # the lifespan startup ran in the worker that serves
    wait_for(lambda: (sockact.show("ActiveState"), sockact.show("SubState")) == ("active", "running"), 30,
             what="the service active (running)")

    def access_record() -> dict | None:
        found = [r for r in sockact_records(sockact.journal()) if r.get("HTTP_PATH") == "/hello"]
        return found[0] if found else None

    access = wait_for(access_record, 30, what="an access record for /hello")  # journald lags
    assert access["SOCKACT_WORKER_PID"] == str(pid) and access["HTTP_STATUS"] == "200"
    records = sockact_records(sockact.journal())
    assert any("as ASGI (detected)" in str(r.get("MESSAGE")) for r in records), messages(records)
    warnings = [r for r in records if int(r["PRIORITY"]) <= 4]
    assert not warnings, messages(warnings)
    sockact.c.systemctl("stop", "sockact.service")
    assert sockact.show("Result") == "success"
    # journald may not have written the worker's last lines when the stop returns
    wait_for(lambda: any(f"lifespan shutdown in {pid}" in str(r.get("MESSAGE")) for r in sockact.journal()), 30,
             what=f"the lifespan shutdown of {pid} in the journal")


def test_an_asgi_loop_stuck_past_timeout_is_killed_and_the_others_serve(sockact: Deployment):
    serve_asgi_app(sockact, SOCKACT_TIMEOUT="2", SOCKACT_WORKERS="3")
    sockact.get("/")
    stuck = Background(sockact.port, "/spin")
    others = served_meanwhile(sockact, stuck)
    assert others and set(others) == {200}, others
    assert stuck.seconds <= 2 + 4, f"the stuck request ended after {stuck.seconds:.1f}s"
    killed = wait_for(lambda: with_message_id(sockact_records(sockact.journal()), "worker_timeout"), 30,
                      what="the worker_timeout record")
    assert "/spin" in killed[0]["MESSAGE"], "the log names the request the loop was stuck on"
    assert sockact.show("NRestarts") == "0"

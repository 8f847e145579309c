"""Out of file descriptors under a real systemd: LimitNOFILE=256 in a drop-in, 1,000 keep-alive clients.

What must hold: nothing crashes and nothing spins (the supervisor's CPU time stays small while it
is saturated with clients none of which is idle); the journal says so once per interval, not once
per accept; once clients go idle, each one waiting in the backlog takes the place of the one idle
longest, so every client gets a whole answer while all of them stay connected; afterwards a new
client is served as before.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
import time

from sysclient import wait_for
from sysdeploy import Deployment, messages

from sockact.supervisor.acceptor import LOG_INTERVAL

CLIENTS = 1000
LIMIT = 256
SATURATED = 4.0  # seconds the server stays saturated while its CPU time is measured
# A head still on its way (its last CRLF comes later): a connection that holds an fd and is not idle.
PARTIAL = b"GET / HTTP/1.1\r\nHost: t\r\n"


def cpu_seconds(sockact: Deployment, pid: int) -> float:
    """utime + stime of ``pid`` inside the container, in seconds."""
    fields = sockact.c.run(["cat", f"/proc/{pid}/stat"]).stdout.rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def read_answers(clients: dict[socket.socket, bytes], seconds: float) -> None:
    """Read what arrives on ``clients`` for ``seconds``, until each has one whole response (or closed)."""
    deadline = time.monotonic() + seconds
    waiting = [s for s, got in clients.items() if not complete(got)]
    while waiting and time.monotonic() < deadline:
        for s in select.select(waiting, [], [], 0.2)[0]:
            try:
                chunk = s.recv(65536)
            except OSError:
                chunk = b""
            clients[s] += chunk if chunk else b"<closed>"
        waiting = [s for s in waiting if not complete(clients[s]) and not clients[s].endswith(b"<closed>")]


def complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return len(body) >= length


def test_out_of_fds_nothing_crashes_or_spins_and_service_resumes(sockact: Deployment):
    sockact.dropin("sockact.service", "50-test-nofile.conf", f"[Service]\nLimitNOFILE={LIMIT}\n")
    sockact.start()
    assert sockact.get("/").status == 200
    main_pid = sockact.main_pid()
    workers = sockact.c.run(["ps", "-o", "pid=", "--ppid", str(main_pid)]).stdout.split()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, CLIENTS + 200)), hard))

    clients: dict[socket.socket, bytes] = {}
    try:
        for _ in range(CLIENTS):
            s = socket.create_connection(("127.0.0.1", sockact.port), timeout=10)
            s.sendall(PARTIAL)
            clients[s] = b""
        # Every fd the budget allows holds a head on its way, none idle to give its place: the rest wait in
        # the kernel's backlog, and the supervisor sleeps.
        wait_for(lambda: "none of them idle" in messages(sockact.journal()), 10, what="the budget's line")
        before = cpu_seconds(sockact, main_pid)
        time.sleep(SATURATED)
        spent = cpu_seconds(sockact, main_pid) - before
        # Waiting for fds to free up is sleeping: a tenth of a core at most, where a spin takes all of it.
        print(f"fd exhaustion: supervisor CPU {spent:.3f}s in {SATURATED}s saturated")
        assert spent < SATURATED * 0.1, f"the supervisor used {spent:.2f}s of CPU in {SATURATED}s"
        assert not any(clients.values()), "a head not yet whole was answered"

        # The heads end (within header_timeout of their accept). Each accepted client is answered and goes
        # idle, connected; each one waiting in the backlog then takes the place of the one idle longest,
        # which is closed after its whole answer. Every client is answered, none of them leaving by itself.
        for s in clients:
            s.sendall(b"\r\n")
        read_answers(clients, 60)
        unanswered = [s for s, got in clients.items() if not complete(got)]
        assert not unanswered, f"{len(unanswered)} clients never got an answer"
        bad = {got[:80] for got in clients.values() if not got.startswith(b"HTTP/1.1 200 ")}
        assert not bad, bad
        made_room = 0  # the clients the server closed, once answered
        for s in clients:
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                made_room += s.recv(1) == b""
        print(f"fd exhaustion: {made_room} of {CLIENTS} idle clients closed to make room")
        assert made_room >= CLIENTS - LIMIT, made_room  # the budget is below the limit
    finally:
        for s in clients:
            s.close()

    wait_for(lambda: sockact.get("/", timeout=5).status == 200, 15, what="service after the clients left")
    assert sockact.main_pid() == main_pid and sockact.show("NRestarts") == "0"
    assert sockact.c.run(["ps", "-o", "pid=", "--ppid", str(main_pid)]).stdout.split() == workers
    text = messages(sockact.journal())
    elapsed_intervals = 1 + (SATURATED + 70) / LOG_INTERVAL
    for line in ("none of them idle", "the longest idle first"):  # each logged once per interval at most
        said = text.count(line)
        print(f"fd exhaustion: {line!r} {said} times in the journal")
        assert 1 <= said <= elapsed_intervals, text[-3000:]
    assert "Traceback" not in text and "killing it" not in text

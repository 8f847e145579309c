"""Hand-off microbenchmark: connection fds passed supervisor -> worker per second, no TCP involved.

Uses sockact's own channel (sockact.ipc.handoff) between two processes, as the supervisor and a worker do:
the parent sends CONN messages each carrying an fd, the forked child receives each one and closes
its copy of the fd, as a worker would once done. Two figures:

- streaming: the parent sends as fast as the channel takes them; the child acknowledges at the end;
- round trip: the child answers each CONN with DONE before the next is sent, as one busy worker does;
- and for scale, the machine's bare round trip between two processes (one byte each way).

Runs under the project's Python (sockact is imported from there), prints one JSON line:

    .venv/bin/python -m bench.handoff_rate
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

from sockact.ipc import handoff

STREAM_COUNT = 200_000
ROUND_TRIPS = 50_000
PEER = ("127.0.0.1", 40000)  # a plausible peer address, so each message is as large as a real CONN


def worker(chan: socket.socket, count: int, answer_each: bool) -> None:
    """The child's side: receive ``count`` CONNs, close each fd; DONE after each or after the last."""
    receiver = handoff.Receiver(chan)
    for _ in range(count):
        msg = receiver.recv()
        if msg is None:
            return
        os.close(msg.fd)
        if answer_each:
            handoff.send(chan, handoff.Message(handoff.DONE))
    if not answer_each:
        handoff.send(chan, handoff.Message(handoff.DONE))


def measure(count: int, answer_each: bool) -> float:
    """Hand-offs per second over one channel between this process and a forked child."""
    sup, wrk = handoff.channel_pair()
    conn, other = socket.socketpair()  # the fd handed off each time; the kernel dups it into the child
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            sup.close()
            worker(wrk, count, answer_each)
        finally:
            os._exit(0)
    wrk.close()
    receiver = handoff.Receiver(sup)
    try:
        began = time.perf_counter()
        for i in range(count):
            handoff.send(sup, handoff.Message(handoff.CONN, conn_id=i, family=socket.AF_INET, peer=PEER,
                                              fd=conn.fileno()))
            if answer_each:
                receiver.recv()
        if not answer_each:
            receiver.recv()
        took = time.perf_counter() - began
    finally:
        sup.close()
        conn.close()
        other.close()
        os.waitpid(pid, 0)
    return count / took


def bare_round_trips(count: int) -> float:
    """The machine's own limit for a round trip: one byte each way between two processes over a
    socketpair, no fd and no sockact code. It depends on how fast the kernel wakes a process on the
    other core, which a virtual machine makes slow."""
    a, b = socket.socketpair()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            a.close()
            for _ in range(count):
                b.recv(1)
                b.send(b"d")
        finally:
            os._exit(0)
    b.close()
    try:
        began = time.perf_counter()
        for _ in range(count):
            a.send(b"c")
            a.recv(1)
        took = time.perf_counter() - began
    finally:
        a.close()
        os.waitpid(pid, 0)
    return count / took


def main() -> int:
    print(json.dumps({"streaming_per_s": round(measure(STREAM_COUNT, answer_each=False)),
                      "round_trip_per_s": round(measure(ROUND_TRIPS, answer_each=True)),
                      "bare_round_trip_per_s": round(bare_round_trips(ROUND_TRIPS))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

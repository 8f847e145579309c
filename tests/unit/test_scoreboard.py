"""The shared scoreboard: what a worker stamps is what the supervisor reads, across a fork."""

import os
import time

from sockact.scoreboard import Scoreboard


def test_progress_idle_and_waiting_across_fork():
    board = Scoreboard(4)
    slot = board.allocate()
    writer = board.writer(slot)
    board.set_waiting(3)
    before = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            writer.requests = 7
            writer.progress("GET /stuck")
            os._exit(0 if writer.others_waiting() else 1)
        finally:
            os._exit(2)
    assert os.waitpid(pid, 0)[1] == 0
    started, requests, line = board.read(slot)
    assert requests == 7 and line == "GET /stuck" and before <= started <= time.monotonic()
    writer.progress()  # restamps the time, keeps the line
    assert board.read(slot)[2] == "GET /stuck"
    writer.idle()
    assert board.read(slot)[0::2] == (0.0, "")
    board.set_waiting(0)
    assert not writer.others_waiting()


def test_slots_are_reused_clean():
    board = Scoreboard(1)
    slot = board.allocate()
    board.writer(slot).progress("POST /x")
    board.release(slot)
    again = board.allocate()
    assert again == slot and board.read(again) == (0.0, 0, "")

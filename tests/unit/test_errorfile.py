"""sockact/logs/errorfile.py on a disk that fills for real (a 64 KiB tmpfs) and then has room again."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sockact.logs.errorfile import ErrorFileHandler


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a disk that fills, and has room again once a file on it is removed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True,
                          text=True, check=False)
    if done.returncode:
        pytest.skip(f"no tmpfs of our own here (root mounts one): {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def fill(path: Path) -> None:
    """Fill the disk ``path`` is on, by writing ``path`` until the disk refuses."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"f" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_a_line_the_full_disk_refused_goes_to_stderr_and_never_to_the_file_later(small_disk, capsys):
    """The disk fills as lines are logged: the file keeps the lines it took whole, then at most the start of the one
    it took in part, on a line of its own; every line after goes to stderr alone. Once there is room, the next lines
    go to the file whole. A buffered file kept what the disk refused and wrote it at the next line with room: the
    refused lines twice (the file and stderr), out of their time, the cut one's end after its start."""
    path = small_disk / "error.log"
    handler = ErrorFileHandler(str(path))
    handler.setFormatter(logging.Formatter("%(message)s"))

    def log(message: str) -> None:
        handler.handle(logging.makeLogRecord({"msg": message, "levelno": logging.ERROR, "levelname": "ERROR"}))

    try:
        log("before the disk filled")
        fill(small_disk / "filler")  # the log file's own last page has room left: it fills within a line
        sent = [f"line {n:02} " + "x" * 200 for n in range(30)]
        for line in sent:
            log(line)
        assert handler.writes.told
        os.unlink(small_disk / "filler")
        for n in range(3):
            log(f"after {n}")
        assert not handler.writes.told
    finally:
        handler.close()
    err = capsys.readouterr().err.splitlines()
    refused = [line for line in err if line.startswith("line ")]
    assert refused == sent[len(sent) - len(refused):] and 0 < len(refused) < len(sent)
    taken = sent[:len(sent) - len(refused)]
    assert err.count(f"error_logfile {path}: cannot write (No space left on device); its lines go to stderr until "
                     "it can") == 1
    assert err.count(f"error_logfile {path}: writes again; {len(refused)} lines went to stderr meanwhile") == 1
    lines = path.read_text().split("\n")
    assert lines[0] == "before the disk filled" and lines[-4:] == ["after 0", "after 1", "after 2", ""]
    kept = lines[1:-4]
    assert kept[:len(taken)] == taken
    # The start of the line the disk took in part (the file's last page had room for it), on a line of its own.
    (cut,) = kept[len(taken):]
    assert refused[0].startswith(cut) and cut != refused[0]

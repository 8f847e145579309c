"""`sockact reload --pid PID`: reload a running supervisor and wait for the outcome (for ExecReload=).

It leaves a request, sends SIGHUP, then waits until the supervisor publishes how that reload ended in
$RUNTIME_DIRECTORY/reload.PID, its own pid (notify.Notifier.reload_finished): another reload that
fails at once while this one runs is no answer to it. A supervisor older than that answers in
$RUNTIME_DIRECTORY/reload alone. It exits 0 once the new generation
is serving (saying on stderr which changed settings, read only at start, wait for a restart). It
exits 1, with the reason on stderr, if the reload failed (a bad configuration
file, an app that does not load: the old generation keeps serving), if the supervisor exits
first, or if no outcome comes within the bound.

The bound is the new settings' ``timeout`` (how long a worker may take to boot) plus
``graceful_timeout``, read from the same sources as the supervisor reads them. When it runs out,
the command gives up waiting and says so; the supervisor carries on with the reload, which
still ends in the journal either way. systemd bounds the whole command by TimeoutStartSec=.

A pid that is no supervisor gets no signal (exit 2): a worker ignores HUP, and the wait would run to
its bound; another program may die of it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from sockact import config
from sockact.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError
from sockact.proctitle import PREFIX, format_title
from sockact.systemd.notify import (
    RELOAD_FILE,
    REQUEST_SUFFIX,
    ReloadOutcome,
    failed_reload,
    read_reload_outcome,
    runtime_dir,
)

POLL = 0.05  # seconds between looks at the outcome file while waiting

DESCRIPTION = """\
Reload the sockact supervisor PID (SIGHUP) and wait until the new generation of workers serves
or the reload fails. Exits 0 on success (naming on stderr any changed setting that only a restart
applies), 1 with the reason otherwise. The supervisor publishes
the outcome in $RUNTIME_DIRECTORY, which systemd sets from RuntimeDirectory= for both
ExecStart= and ExecReload=."""


def _supervisor_pid(text: str) -> int:
    try:
        pid = int(text)
    except ValueError:  # else argparse names this function: "invalid _supervisor_pid value"
        raise argparse.ArgumentTypeError(f"not a process id: {text!r}") from None
    if pid <= 1:  # kill(0) would signal our own process group, kill(-1) everyone, 1 is init
        raise argparse.ArgumentTypeError(f"not a supervisor's pid: {text}")
    return pid


# The `reload` subcommand's options: one list for its parser and for its flags (cli.py).
OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("--pid",), {"type": _supervisor_pid, "required": True,
                  "help": "the supervisor's process id ($MAINPID in ExecReload=)"}),
    (("-c", "--config"), {"metavar": "FILE",
                          "help": "the TOML settings file the supervisor re-reads, for the bound of the wait"}),
    (("--max-wait",), {"type": float, "metavar": "SECONDS",
                       "help": "give up waiting after this long [default: timeout + graceful_timeout from the "
                               "settings]"}),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `reload` subcommand's options (cli.py builds the subparser)."""
    for flags, kwargs in OPTIONS:
        parser.add_argument(*flags, **kwargs)


@dataclass(frozen=True)
class Verdict:
    exit_code: int
    message: str  # empty on success (like `nginx -s reload`, quiet when it worked), but for settings left for a restart


def judge(pid: int, before: int, outcome: ReloadOutcome | None, alive: bool, waited: float,
          bound: float, own: ReloadOutcome | None = None, requested: bool = False) -> Verdict | None:
    """What the wait has come to, or None to keep waiting.

    ``own`` is the outcome published for this command's request, if any yet; ``outcome`` the one
    published for all. ``before`` is the sequence number of the latter before the SIGHUP (0 if none):
    only a later one answers this reload, and only if its supervisor takes no requests (an older one)
    or this command could leave none (``requested`` False).
    """
    if own is not None and own.pid == pid:
        outcome, before = own, 0
    elif outcome is not None and outcome.answers is not None and requested:
        outcome = None  # another request's: this one's comes on its own
    if outcome is not None and outcome.pid == pid and outcome.seq > before:
        if outcome.ok:  # quiet, unless the new settings hold some only a restart applies
            return Verdict(EXIT_OK, f"reload done, but not every setting: {outcome.reason}" if outcome.reason else "")
        if outcome.kept:  # the supervisor says what it keeps ("generation 1")
            return Verdict(EXIT_FAILURE, f"reload failed: {failed_reload(outcome.reason, outcome.kept)}")
        if outcome.kept is None and "; keeping " in outcome.reason:
            # A supervisor older than the field (an upgrade not yet restarted) said it in the reason: not twice.
            return Verdict(EXIT_FAILURE, f"reload failed: {outcome.reason}")
        return Verdict(EXIT_FAILURE, f"reload failed: {outcome.reason}; the running workers keep serving")
    if not alive:
        return Verdict(EXIT_FAILURE, f"reload failed: process {pid} exited before the reload finished")
    if waited >= bound:
        return Verdict(EXIT_FAILURE, f"no outcome from process {pid} within {bound:g}s: the new workers may "
                                     "still be starting while the old ones serve; the journal tells the end")
    return None


def wait_bound(environ: Mapping[str, str], config_file: str | None) -> float:
    """timeout + graceful_timeout of the settings the supervisor will read (the defaults if those
    do not load: then the supervisor fails the reload at once, and the bound does not matter)."""
    try:
        cfg = config.build({}, environ, config_file)
    except ConfigError:
        cfg = config.Config()
    return cfg.timeout + cfg.graceful_timeout


def not_a_supervisor(pid: int, command: str | None, parent: int, parent_command: str | None) -> str | None:
    """Why process ``pid``, running ``command`` (None: /proc would not say), is no sockact supervisor to send
    SIGHUP, or None. A worker ignores the HUP (and the wait ran to its bound); another program may die of it."""
    if command is None:
        return None
    if PREFIX not in command:
        return (f"process {pid} is not sockact (it runs {command!r}); nothing was sent: give the supervisor's "
                "pid ($MAINPID in ExecReload=, or: systemctl show -p MainPID --value sockact.service)")
    # A worker is titled so; without setproctitle it runs its supervisor's command line, forked from it.
    if command.startswith(format_title("worker")) or command == parent_command:
        return (f"process {pid} is a worker of sockact, not its supervisor; nothing was sent: "
                f"sockact reload --pid {parent}")
    return None


def _command(pid: int) -> str | None:
    """Process ``pid``'s command line (its title, where setproctitle set one), or None if /proc does not say."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rpartition(b")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists; we may not signal it (we could not have sent the HUP either)
    return True


def main(pid: int, config_file: str | None = None, max_wait: float | None = None,
         environ: Mapping[str, str] | None = None, *, err: TextIO | None = None,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
         command: Callable[[int], str | None] = _command) -> int:
    """Reload supervisor ``pid`` and wait for the outcome; returns the exit code."""
    environ = os.environ if environ is None else environ
    err = sys.stderr if err is None else err
    directory = runtime_dir(environ)
    if directory is None:
        print("sockact: reload: RUNTIME_DIRECTORY is not set, so the outcome cannot be read; run it "
              "from ExecReload= of a unit with RuntimeDirectory=, or send SIGHUP yourself", file=err)
        return EXIT_USAGE
    bound = max_wait if max_wait is not None else wait_bound(environ, config_file)
    parent = _parent(pid)
    refusal = not_a_supervisor(pid, command(pid), parent, command(parent) if parent else None)
    if refusal is not None:
        print(f"sockact: reload: {refusal}", file=err)
        return EXIT_USAGE
    previous = read_reload_outcome(directory)
    before = previous.seq if previous is not None and previous.pid == pid else 0
    me = os.getpid()
    answer = os.path.join(directory, f"{RELOAD_FILE}.{me}")
    request = answer + REQUEST_SUFFIX
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(answer)  # a process of the same pid's, long gone
        open(request, "w").close()
        requested = True
    except OSError:
        requested = False  # the shared outcome alone answers then, as from an older supervisor
    try:
        try:
            os.kill(pid, signal.SIGHUP)
        except OSError as exc:
            print(f"sockact: reload: cannot signal process {pid}: {exc.strerror}", file=err)
            return EXIT_FAILURE
        started = clock()
        while True:
            verdict = judge(pid, before, read_reload_outcome(directory), _alive(pid), clock() - started, bound,
                            read_reload_outcome(directory, me) if requested else None, requested)
            if verdict is not None:
                if verdict.message:
                    print(f"sockact: {verdict.message}", file=err)
                return verdict.exit_code
            sleep(POLL)
    finally:
        for path in (request, answer):  # taken, or left by a supervisor that exited first
            with contextlib.suppress(OSError):
                os.unlink(path)

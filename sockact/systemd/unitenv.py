"""What the unit's environment sets, for `sockact check` run from a shell.

A drop-in's ``Environment=SOCKACT_*`` wins over the configuration file under the service, and a check run
from a shell never sees it: it checks the file, and passes, with settings the service will not have. When
systemd knows sockact.service and the unit runs the file being checked (its ExecStart's ``--config``), the
check says in one line which SOCKACT_* variables the unit sets otherwise than the shell, from
``systemctl show`` (no systemd, no such unit, or no answer within a second: nothing is said).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Callable, Mapping

from sockact.config.settings import ENV_PREFIX

UNIT = "sockact.service"
SHOW_TIMEOUT = 1.0  # seconds: a check does not wait on a busy or absent manager


def parse_show(text: str) -> tuple[dict[str, str], list[str]] | None:
    """The unit's environment and its ExecStart= argv from ``systemctl show -p LoadState -p Environment -p
    ExecStart`` output, or None when systemd does not have the unit loaded."""
    fields = dict(line.partition("=")[::2] for line in text.splitlines())
    if fields.get("LoadState") != "loaded":
        return None
    try:
        env = dict(item.partition("=")[::2] for item in shlex.split(fields.get("Environment", "")))
        # "{ path=/usr/bin/sockact ; argv[]=/usr/bin/sockact run --config /etc/... ; ignore_errors=no ; ... }"
        argv_field = next((part.strip() for part in fields.get("ExecStart", "").split(" ; ")
                           if part.strip().startswith("argv[]=")), "argv[]=")
        argv = shlex.split(argv_field[len("argv[]="):])
    except ValueError:  # quoting that shlex does not read: say nothing rather than something wrong
        return None
    return env, argv


def runs_file(argv: list[str], path: str) -> bool:
    """Whether ExecStart's ``argv`` reads the configuration file ``path``."""
    wanted = os.path.realpath(path)
    for i, arg in enumerate(argv):
        if arg in ("--config", "-c") and i + 1 < len(argv):
            given = argv[i + 1]
        elif arg.startswith("--config="):
            given = arg.partition("=")[2]
        else:
            continue
        if os.path.realpath(given) == wanted:
            return True
    return False


def note(unit_env: Mapping[str, str], environ: Mapping[str, str], unit: str = UNIT) -> str:
    """The line that names the SOCKACT_* variables ``unit`` sets otherwise than ``environ``; "" for none."""
    differ = [f"{key}={value}" for key, value in sorted(unit_env.items())
              if key.startswith(ENV_PREFIX) and environ.get(key) != value]
    if not differ:
        return ""
    return (f"{unit} sets {', '.join(differ)} in its environment (Environment=, a drop-in's): under the "
            f"service that wins over the file, so it runs with settings other than those checked here; "
            f"`systemctl show -p Environment {unit}` lists them")


def unit_note(config_file: str, environ: Mapping[str, str],
              run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> str:
    """note() for sockact.service, if systemd has it and it runs ``config_file``; "" otherwise."""
    try:
        shown = run(["systemctl", "show", "-p", "LoadState", "-p", "Environment", "-p", "ExecStart", UNIT],
                    capture_output=True, text=True, timeout=SHOW_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    parsed = parse_show(shown.stdout) if shown.returncode == 0 else None
    if parsed is None or not runs_file(parsed[1], config_file):
        return ""
    return note(parsed[0], environ)

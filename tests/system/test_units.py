"""The unit files: what issue-level requirements they state, systemd-analyze verify, the security score.

The content checks and the security score need no container (``systemd-analyze security
--offline=yes`` reads the files as they are); ``verify`` runs in the container, where
/usr/bin/sockact exists as the package installs it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from nspawn import Container
from sysdeploy import REPO, UNIT_DIR, UNITS

from sockact.errors import APP_LOAD_ERROR, EXIT_FAILURE, EXIT_USAGE, WORKER_BOOT_ERROR

UNITS_SRC = REPO / "packaging" / "systemd"
SECURITY_THRESHOLD = 1.5  # the highest exposure level sockact.service may score
HARDENING = {
    "DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "PrivateDevices": "yes", "PrivateUsers": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
    "SystemCallArchitectures": "native", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes",
    "ProtectHostname": "yes", "ProtectProc": "invisible", "ProcSubset": "pid", "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes", "UMask": "0077",
    "MemoryDenyWriteExecute": "yes",
}


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}; systemd keys may repeat, so configparser will not do."""
    sections: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    current = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            current = line.strip("[]")
            sections[current]  # touching it creates it: an empty section still exists
            continue
        key, _, value = line.partition("=")
        sections[current][key.strip()].append(value.strip())
    return sections


def one(unit: dict[str, dict[str, list[str]]], section: str, key: str) -> str:
    (value,) = unit[section][key]
    return value


def test_socket_unit():
    unit = parse_unit(UNITS_SRC / "sockact.socket")
    assert unit["Socket"]["ListenStream"] == ["127.0.0.1:8080"]
    assert one(unit, "Socket", "FileDescriptorName") == "http"
    assert 128 <= int(one(unit, "Socket", "Backlog")) <= 65535
    assert one(unit, "Install", "WantedBy") == "sockets.target"


def test_service_unit():
    unit = parse_unit(UNITS_SRC / "sockact.service")
    service = unit["Service"]
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert one(unit, "Service", "ExecStart") == "/usr/bin/sockact run --config /etc/sockact/sockact.toml"
    # sockact itself, which waits for the outcome: no /bin/kill (procps is not a dependency)
    assert one(unit, "Service", "ExecReload") == ("/usr/bin/sockact reload --pid $MAINPID "
                                                  "--config /etc/sockact/sockact.toml")
    assert one(unit, "Service", "RuntimeDirectory") == "sockact/%n"  # where the outcome is published
    assert one(unit, "Service", "KillMode") == "mixed"
    assert one(unit, "Service", "Restart") == "on-failure"
    # the socket outlives the service: no start limit to take it down, no restart of what only an
    # operator can fix, and a pause between the restarts of a crash
    assert one(unit, "Unit", "StartLimitIntervalSec") == "0"
    prevented = one(unit, "Service", "RestartPreventExitStatus").split()
    assert {str(EXIT_USAGE), str(APP_LOAD_ERROR), str(WORKER_BOOT_ERROR)} <= set(prevented)
    assert str(EXIT_FAILURE) not in prevented
    assert re.fullmatch(r"[1-9]\d*s", one(unit, "Service", "RestartSec"))
    assert re.fullmatch(r"\d+s", one(unit, "Service", "WatchdogSec"))
    assert one(unit, "Unit", "Requires") == one(unit, "Unit", "After") == "sockact.socket"
    assert unit["Unit"]["Documentation"]
    assert "Install" not in unit, "the service must start only by socket activation"
    assert "PYTHONDONTWRITEBYTECODE=1" in service["Environment"]
    for key, value in HARDENING.items():
        assert service[key][-1:] == [value], key
    assert service["RestrictAddressFamilies"]
    assert "@system-service" in service["SystemCallFilter"]


def test_templates_differ_from_the_units_only_by_instance():
    """sockact@.service carries the same hardening as sockact.service: no drift between the two."""
    for name in ("service", "socket"):
        plain = parse_unit(UNITS_SRC / f"sockact.{name}")
        template = parse_unit(UNITS_SRC / f"sockact@.{name}")
        assert template.keys() == plain.keys()
        for section, keys in plain.items():
            for key, values in keys.items():
                if key in ("Description", "Requires", "After", "ExecStart", "ExecReload", "ListenStream",
                           "LogsDirectory"):
                    continue
                if name == "socket" and key in ("SocketMode", "NoDelay", "DeferAcceptSec"):
                    continue  # Unix-socket settings in place of TCP ones
                assert template[section][key] == values, f"sockact@.{name} [{section}] {key}"
    service = parse_unit(UNITS_SRC / "sockact@.service")
    assert one(service, "Service", "ExecStart") == "/usr/bin/sockact run --config /etc/sockact/%i.toml"
    assert one(service, "Service", "ExecReload") == ("/usr/bin/sockact reload --pid $MAINPID "
                                                     "--config /etc/sockact/%i.toml")
    assert one(service, "Unit", "Requires") == one(service, "Unit", "After") == "sockact@%i.socket"
    assert one(service, "Service", "LogsDirectory") == "sockact-%i"  # each instance logs apart
    socket_unit = parse_unit(UNITS_SRC / "sockact@.socket")
    assert socket_unit["Socket"]["ListenStream"] == ["/run/sockact/%i.sock"]


def exposure(*args: str) -> float:
    """The overall exposure level ``systemd-analyze security --offline=yes ARGS`` reports."""
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", *args],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Overall exposure level for \S+: (\d+\.\d)", out).group(1))


needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")


@needs_analyze
@pytest.mark.parametrize("unit", ["sockact.service", "sockact@.service"])
def test_security_score(unit):
    assert exposure(str(UNITS_SRC / unit)) <= SECURITY_THRESHOLD
    # the same gate as systemd-analyze's own: it counts in tenths
    gate = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                           f"--threshold={int(SECURITY_THRESHOLD * 10)}", str(UNITS_SRC / unit)],
                          capture_output=True, text=True, check=False)
    assert gate.returncode == 0, gate.stdout + gate.stderr


@needs_analyze
def test_private_network_drop_in_scores_lower(tmp_path):
    """The shipped example drop-in, applied to the service in a scratch root."""
    system = tmp_path / "etc" / "systemd" / "system"
    (system / "sockact.service.d").mkdir(parents=True)
    shutil.copy(UNITS_SRC / "sockact.service", system)
    shutil.copy(UNITS_SRC / "examples" / "private-network.conf", system / "sockact.service.d")
    hardened = exposure(f"--root={tmp_path}", "sockact.service")
    assert hardened < exposure(str(UNITS_SRC / "sockact.service"))
    assert hardened <= 0.5


@needs_analyze
@pytest.mark.parametrize("unit", ["sockact.service", "sockact@.service"])
def test_the_memory_limit_drop_in_keeps_the_score(tmp_path, unit):
    """Delegate=yes and ProtectControlGroups=no (worker_memory_limit) cost a little, within the gate."""
    system = tmp_path / "etc" / "systemd" / "system"
    (system / f"{unit}.d").mkdir(parents=True)
    shutil.copy(UNITS_SRC / unit, system)
    shutil.copy(UNITS_SRC / "examples" / "memory-limit.conf", system / f"{unit}.d")
    name = unit.replace("@.", "@x.")  # an instance of the template
    delegated = exposure(f"--root={tmp_path}", name)
    assert exposure(str(UNITS_SRC / unit)) < delegated <= SECURITY_THRESHOLD


@needs_analyze
def test_security_gate_can_fail(tmp_path):
    """An unhardened copy fails the gate, so a passing gate means something."""
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/bin/true\n")
    assert exposure(str(bare)) > SECURITY_THRESHOLD


def test_verify(container: Container):
    units = [f"{UNIT_DIR}/{unit}" for unit in UNITS]
    result = container.run(["systemd-analyze", "verify", "--man=no", *units], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not result.stderr.strip(), result.stderr  # warnings too
    instances = container.run(["systemd-analyze", "verify", "--man=no", "sockact@blog.socket",
                               "sockact@blog.service"], check=False)
    assert instances.returncode == 0, instances.stdout + instances.stderr


def test_catalog_is_accepted(container: Container):
    """journalctl compiles the installed catalog without complaint and knows every event."""
    from sockact.logs.journal import EVENTS

    result = container.run(["journalctl", "--update-catalog"])
    assert not result.stderr.strip(), result.stderr
    listed = container.run(["journalctl", "--list-catalog"]).stdout
    for event in EVENTS.values():
        assert f"{event.message_id} sockact: {event.subject}" in listed


def test_verify_catches_a_broken_unit(container: Container):
    container.write("/srv/sockact-tests/broken.service", "[Service]\nType=notify\nExecStart=/usr/bin/nonexistent\n")
    try:
        result = container.run(["systemd-analyze", "verify", "--man=no", "/srv/sockact-tests/broken.service"],
                               check=False)
    finally:
        container.remove("/srv/sockact-tests/broken.service")
    assert result.returncode != 0


def test_default_config_documents_every_setting(tmp_path):
    """packaging/sockact.toml loads, serves the demo app, and shows each setting with its default."""
    from sockact import config

    path = REPO / "packaging" / "sockact.toml"
    text = path.read_text()
    cfg = config.build({}, {}, str(path))
    assert cfg.app == config.DEFAULT_APP
    defaults = [line for line in config.describe(config.Config()) if line and not line.startswith("#")]
    assert len(defaults) == sum(1 for s in config.SETTINGS if s.default is not None)
    for line in defaults:
        assert re.search(rf"^(# )?{re.escape(line)}$", text, re.M), f"not documented: {line}"
    assert re.search(r"^# virtualenv = ", text, re.M)
    # the commented [listeners.NAME] example is valid once uncommented
    example = text[text.index("# [listeners."):]
    uncommented = tmp_path / "listeners.toml"
    uncommented.write_text("\n".join(line.removeprefix("# ") for line in example.splitlines()))
    assert set(config.build({}, {}, str(uncommented)).listeners) == {"api"}

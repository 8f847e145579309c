"""The docs name only settings that exist, with the defaults the code has."""

import re
from pathlib import Path

import pytest

from sockact import config

ROOT = Path(__file__).resolve().parents[2]


def readme_settings_rows():
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"^\| `([a-z_*]+)` \| (.*?) \|", line)
        if m:
            yield m.group(1), m.group(2)


def test_readme_settings_table_matches_the_code():
    rows = dict(readme_settings_rows())
    assert rows, "README has no settings table"
    for name, default in rows.items():
        if name.endswith("*"):
            assert any(s.name.startswith(name[:-1]) for s in config.SETTINGS), name
            continue
        setting = config.BY_NAME[name]
        value = setting.default
        shown = default.strip("`")
        if value in (None, (), ""):
            assert shown in ("unset", "none"), name
        elif isinstance(value, bool):
            assert shown == str(value).lower(), name
        elif isinstance(value, float):
            assert float(shown) == value, name
        else:
            assert shown == str(value), name


def test_drop_ins_say_a_reload_rereads_the_file_but_not_the_environment():
    # tests/integration/test_config_apps.py shows a reload re-reading the file.
    text = " ".join((ROOT / "docs" / "drop-ins.md").read_text().split())
    assert "settings the service started with" not in text
    assert "re-reads the configuration file" in text


def from_gunicorn_rows():
    """(gunicorn setting, gunicorn flags, sockact flags) from docs/from-gunicorn.md's table."""
    for line in (ROOT / "docs" / "from-gunicorn.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`\w+`", cells[0]):
            yield cells[0].strip("`"), re.findall(r"`(-[\w-]+)`", cells[1]), re.findall(r"`(-[\w-]+)`", cells[2])


def test_from_gunicorn_table_agrees_with_the_parser():
    from sockact import cli

    parser = cli.build_parser()
    run = next(a for a in parser._actions if a.dest == "command").choices["run"]
    ours = {opt: action.dest for action in run._actions for opt in action.option_strings}
    rows = list(from_gunicorn_rows())
    assert len(rows) > 50
    for name, theirs, listed in rows:
        # every flag the table gives sockact exists, and all of one row set the same thing
        assert set(listed) <= set(ours), (name, listed)
        assert len({ours[f] for f in listed}) <= 1, (name, listed)
        # a gunicorn flag that sockact also has is in that row: same spelling, same meaning
        shared = [f for f in theirs if f in ours]
        assert set(shared) <= set(listed), (name, shared)
    # each gunicorn flag sockact accepts is documented in some row
    documented = {f for _, theirs, _ in rows for f in theirs}
    gunicorn_like = {"-w", "-b", "-t", "-e", "--keep-alive", "--chdir", "--pythonpath", "--threads", "--preload",
                     "--max-requests", "--max-requests-jitter", "--graceful-timeout", "--log-level", "--reload",
                     "--check-config", "--print-config", "--access-logfile", "--error-logfile",
                     "--access-logformat", "--forwarded-allow-ips", "--root-path"}
    assert gunicorn_like <= documented & set(ours)


def test_from_gunicorn_table_covers_every_gunicorn_setting():
    gunicorn_config = pytest.importorskip("gunicorn.config")
    names = [name for name, _, _ in from_gunicorn_rows()]
    assert sorted(names) == sorted(s.name for s in gunicorn_config.KNOWN_SETTINGS)


def test_the_sandboxed_check_has_the_units_lines_and_the_deploy_page_shows_it():
    from sockact.sandbox import CHECK_PROPERTIES, sandboxed_check_line

    unit = (ROOT / "packaging" / "systemd" / "sockact.service").read_text().splitlines()
    # every property but the dynamic user's name is a line of the unit ...
    assert [p for p in CHECK_PROPERTIES if p not in unit] == ["User=sockact"]
    # ... and every unit line that shapes what an app sees at import is a property
    shaping = ("DynamicUser=", "ProtectSystem=", "ProtectHome=", "PrivateTmp=", "PrivateUsers=",
               "MemoryDenyWriteExecute=", "LogsDirectory=", "Environment=", "ReadOnlyPaths=", "InaccessiblePaths=")
    assert [line for line in unit if line.startswith(shaping) and line not in CHECK_PROPERTIES] == []
    page = (ROOT / "docs" / "deploy.md").read_text()
    block = re.search(r"^```sh\n(systemd-run .*?)^```$", page, re.M | re.S)
    assert block, "docs/deploy.md shows no systemd-run line"
    shown = " ".join(block.group(1).replace("\\\n", " ").split())
    assert shown == sandboxed_check_line("/etc/sockact/sockact.toml", ["StateDirectory=flaskapp"])


def test_from_gunicorn_table_agrees_with_sockact_convert():
    from sockact import fromgunicorn
    from sockact.hooks import HOOK_NAMES

    for line in (ROOT / "docs" / "from-gunicorn.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not re.fullmatch(r"`\w+`", cells[0]):
            continue
        name, ours = cells[0].strip("`"), cells[2]
        setting = re.match(r"`(\w+)`:", ours)
        if setting:  # a setting sockact has: convert carries it there
            assert fromgunicorn.RENAMED.get(name) == setting.group(1), name
        elif ours == f"`hooks.{name}`":
            assert name in HOOK_NAMES, name
        else:  # none, or a flag with no setting (--check-config): convert names it as not carried
            assert name in fromgunicorn.NOT_CARRIED, name

"""The docs name only settings that exist, with the defaults the code has."""

import re
from pathlib import Path

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

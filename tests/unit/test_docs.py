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
    from sockact.config.sandbox import CHECK_PROPERTIES, sandboxed_check_line

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


# -- every setting a page names exists, and no page says what --help contradicts

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Names in backquotes that are not settings: the Python, WSGI and ASGI APIs and the C and systemd calls
# the pages explain, nginx's directive, the access log's JSON keys; gunicorn's settings in
# docs/http.md are allowed as rows of from-gunicorn.md.
NOT_SETTINGS = {"add_reader", "exc_info", "more_body", "query_string", "raw_path", "serve_connection", "start_response",
                "prometheus_client", "sd_listen_fds_with_names", "sd_notify", "set_wakeup_fd", "malloc_trim",
                "proxy_pass", "close_code", "bytes_in", "bytes_out"}
_SNAKE = re.compile(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)`")
_ASSIGNED = re.compile(r"`([a-z][a-z0-9_]*) = (?:\"[^\"`]*\"|'[^'`]*'|-?[0-9][0-9.]*|true|false|\[[^`]*\])`")
_ENV_ASSIGNED = re.compile(r"\bSOCKACT_([A-Z][A-Z0-9_]*)=")
_TOML_BLOCK = re.compile(r"^```toml\n(.*?)^```$", re.M | re.S)


def _prose(page: Path) -> str:
    """A page without the gunicorn side of from-gunicorn.md's table (gunicorn's names, not ours)."""
    if page.name != "from-gunicorn.md":
        return page.read_text()
    return "\n".join("|".join(line.split("|")[3:]) if re.match(r"^\| `\w+` \|", line) else line
                     for line in page.read_text().splitlines())


def test_every_setting_a_page_names_exists():
    metrics_code = (ROOT / "sockact" / "supervisor" / "exposition.py").read_text()
    gunicorn_names = {name for name, _, _ in from_gunicorn_rows()}
    not_ours = set()
    for page in PAGES:
        text = _prose(page)
        for name in _SNAKE.findall(text):
            if name.startswith("sockact_"):  # a metric, as supervisor/exposition.py names it
                known = f'"{name.removesuffix("_total")}"' in metrics_code
            else:
                known = name in config.BY_NAME or name in NOT_SETTINGS or name in gunicorn_names
            if not known:
                not_ours.add((page.name, name))
        not_ours |= {(page.name, n) for n in _ASSIGNED.findall(text) if n not in config.BY_NAME.keys() | gunicorn_names}
        # Environment=SOCKACT_WORKERS=8 and the like; the tests' own knobs are no settings
        not_ours |= {(page.name, f"SOCKACT_{n}") for n in _ENV_ASSIGNED.findall(text)
                     if n.lower() not in config.BY_NAME
                     and not n.startswith(("FUZZ_", "SOAK_", "CONN_ID", "VM_SUITES"))}
    assert sorted(not_ours) == []


def test_every_toml_block_of_a_page_is_a_file_sockact_reads(tmp_path: Path):
    for page in PAGES:
        for n, block in enumerate(_TOML_BLOCK.findall(page.read_text())):
            path = tmp_path / f"{page.stem}-{n}.toml"
            path.write_text(block)
            try:
                config.read_toml(str(path))
            except config.ConfigError as exc:
                pytest.fail(f"{page.name}, TOML block {n + 1}: {exc}")


def test_the_packaged_config_shows_each_setting_once_with_its_default():
    import tomllib

    text = (ROOT / "packaging" / "sockact.toml").read_text()
    top = text.split("\n# [", 1)[0]  # the tables' examples after it ([hooks], [listeners.NAME]) set their own
    shown: list[tuple[str, object]] = []
    for name, value in re.findall(r"^# ([a-z_]+) = (.+)$", top, re.M):
        try:
            shown.append((name, tomllib.loads(f"v = {value}")["v"]))
        except tomllib.TOMLDecodeError:
            continue  # prose that happens to read "name = ..."
    names = [name for name, _ in shown]
    assert sorted({n for n in names if names.count(n) > 1}) == []
    for name, raw in shown:
        setting = config.BY_NAME[name]
        if setting.default in (None, "", ()):
            continue  # unset by default: the line shows an example value
        assert setting.parse(raw) == setting.default, name


def _help_text() -> str:
    from sockact import cli

    parser = cli.build_parser()
    run = next(a for a in parser._actions if a.dest == "command").choices["run"]
    return " ".join((parser.format_help() + run.format_help()).split())


# What pages once said, each beside what --help says instead; the first must be in no page, unit
# or man page, the second must still be in --help (else the pair is stale and must be redone).
CONTRADICTED_BY_HELP = (
    ("to an idle worker", "hands each one to the least-loaded worker that is not stalled"),
    ("serves one connection at a time", "1 serves one request at a time per worker"),
)


def _said_anywhere() -> dict[str, str]:
    from sockact import manpage

    texts = {page.name: page.read_text() for page in PAGES}
    for path in [*(ROOT / "packaging" / "systemd").glob("sockact*"), ROOT / "packaging" / "sockact.toml",
                 ROOT / "debian" / "control"]:
        texts[path.name] = path.read_text()
    texts["man pages"] = manpage.SOCKACT_1_DESCRIPTION
    return {name: " ".join(text.split()) for name, text in texts.items()}


@pytest.mark.parametrize(("wrong", "helps"), CONTRADICTED_BY_HELP)
def test_no_page_says_what_help_contradicts(wrong: str, helps: str):
    assert helps in _help_text()
    assert [name for name, text in _said_anywhere().items() if wrong in text] == []


def test_from_gunicorn_calls_no_asgi_setting_wsgi_only():
    # --help: interface 'asgi' is served; gunicorn's ASGI settings map to sockact's or say why not
    assert "'asgi' (ASGI 3" in _help_text()
    rows = [line for line in (ROOT / "docs" / "from-gunicorn.md").read_text().splitlines()
            if re.match(r"^\| `(asgi|websocket)_\w+` \|", line)]
    assert len(rows) == 4 and not [row for row in rows if "WSGI only" in row], rows


def test_from_gunicorn_table_agrees_with_sockact_convert():
    from sockact.config import fromgunicorn
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


def test_restarts_page_names_every_setting_only_a_restart_applies():
    # Setting.restart: a reload keeps the running value; the page's list is what operators go by
    text = " ".join((ROOT / "docs" / "restarts.md").read_text().split())
    listed = text.split("A few are read once, as the supervisor starts:", 1)[1].split(". ", 1)[0]
    names = set(re.findall(r"`\[?(\w+)\]?`", listed))
    assert names == {s.name for s in config.SETTINGS if s.restart}


def test_readme_folder_table_names_files_that_exist_and_every_module_of_the_process_folders():
    rows = re.findall(r"^\| `(sockact/[a-z]*/?)`(?: \([^)]*\))? \| [^|]* \| (.*) \|$",
                      (ROOT / "README.md").read_text(), re.M)
    assert len(rows) > 10
    for folder, text in rows:
        named = set(re.findall(r"`([a-z_]+\.py)`", text))
        assert [f for f in named if not (ROOT / folder / f).exists()] == [], folder
        # the asgi and apps rows say what is there in words; the others name each module
        if folder not in ("sockact/asgi/", "sockact/apps/"):
            modules = {p.name for p in (ROOT / folder).glob("*.py")} - {"__init__.py", "__main__.py"}
            assert sorted(modules - named) == [], folder


def test_log_lines_the_pages_quote_are_the_codes():
    from sockact.asgi.interface import one_interface
    from sockact.errors import AppLoadError
    from sockact.worker.asgirunner import NO_WEBSOCKET_LIBRARY

    assert "    " + NO_WEBSOCKET_LIBRARY + "\n" in (ROOT / "docs" / "asgi.md").read_text()
    with pytest.raises(AppLoadError) as mixed:
        one_interface([("http", "wsgi"), ("api", "asgi")])
    assert str(mixed.value).split(" (")[0] in " ".join((ROOT / "docs" / "asgi.md").read_text().split())

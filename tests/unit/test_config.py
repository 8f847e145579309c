"""The one list of settings: sources, precedence and errors."""

import pytest

from sockact import config
from sockact.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "sockact.toml"
    path.write_text(text)
    return str(path)


def test_defaults():
    cfg = config.build({}, {}, None)
    assert cfg.workers == 2 and cfg.keepalive == 75.0 and cfg.bind == ("127.0.0.1:8000",)
    assert cfg.limit_request_line == 8190 and cfg.limit_request_head == 65536


def test_precedence_file_env_cli(tmp_path):
    path = write(tmp_path, 'workers = 3\nkeepalive = 5\napp = "a.b:c"\n')
    cfg = config.build({}, {}, path)
    assert (cfg.workers, cfg.keepalive, cfg.app) == (3, 5.0, "a.b:c")
    cfg = config.build({}, {"SOCKACT_WORKERS": "8"}, path)
    assert cfg.workers == 8 and cfg.keepalive == 5.0
    cfg = config.build({"workers": "1"}, {"SOCKACT_WORKERS": "8"}, path)
    assert cfg.workers == 1


def test_config_file_from_environment(tmp_path):
    path = write(tmp_path, "workers = 5\n")
    assert config.build({}, {"SOCKACT_CONFIG": path}, None).workers == 5


@pytest.mark.parametrize(("text", "needle"), [
    ("wokers = 3\n", "unknown key 'wokers' (did you mean 'workers'?)"),
    ("workers = 0\n", "key 'workers': invalid value 0: must be >= 1"),
    ('workers = "many"\n', "key 'workers'"),
    ("keepalive = -1\n", "key 'keepalive'"),
    ("preload = 3\n", "key 'preload'"),
    ('app = "no-colon"\n', "key 'app'"),
    ("[listeners.api]\nworkers = 2\n", "unknown key 'listeners.api.workers'"),
    ('[listeners.api]\napp = "x y"\n', "key 'listeners.api.app'"),
    ("workers = [\n", "not valid TOML"),
    ('access_log = "ture"\n', "key 'access_log'"),  # a typo is refused, never taken for false
    ('preload = "flase"\n', "key 'preload'"),
    ('health_path = "health"\n', "key 'health_path'"),  # it would never match a request's path
    # A NaN or infinite time would make every deadline test false (or true), or crash a poll().
    ("timeout = nan\n", "key 'timeout': invalid value nan: expected a finite number of seconds"),
    ("header_timeout = inf\n", "key 'header_timeout'"),
    ('handback_after = "nan"\n', "key 'handback_after'"),
    ("graceful_timeout = -inf\n", "key 'graceful_timeout'"),
    # Past ~292 years a sleep or a lock's wait raises OverflowError; far before, a bound says no.
    ("backlog = 2147483648\n", "key 'backlog': invalid value 2147483648: must be <= 2147483647"),
    ("handback_after = 1e12\n", "key 'handback_after': invalid value 1000000000000.0: must be at most 100000000 "
                                "seconds"),
    # The reason is said in sockact's words, not Python's ("invalid literal for int() with base 0").
    ('workers = "two"\n', "key 'workers': invalid value 'two': expected an integer"),
    ('ws_max_size = "1M"\n', "key 'ws_max_size': invalid value '1M': expected an integer"),
    ('timeout = "soon"\n', "key 'timeout': invalid value 'soon': expected a number of seconds"),
    # TOML's \u0000 puts a NUL in a string, which os.chdir and os.environ refuse with a ValueError.
    ('chdir = "/srv\\u0000app"\n', "key 'chdir': invalid value '/srv\\x00app': contains a NUL byte"),
    ('env = ["A=b\\u0000"]\n', "key 'env': invalid value ['A=b\\x00']: contains a NUL byte"),
    ('pythonpath = ["/srv\\u0000"]\n', "key 'pythonpath'"),
    ('access_logfile = "/var/log/a\\u0000"\n', "key 'access_logfile'"),
    ('bind = ["unix:/run/a\\u0000"]\n', "key 'bind'"),
])
def test_bad_files_name_the_key(tmp_path, text, needle):
    with pytest.raises(ConfigError) as err:
        config.build({}, {}, write(tmp_path, text))
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_environment_and_flags():
    with pytest.raises(ConfigError, match="SOCKACT_WORKERS"):
        config.build({}, {"SOCKACT_WORKERS": "x"}, None)
    with pytest.raises(ConfigError, match="unknown variable SOCKACT_WORKER "):
        config.build({}, {"SOCKACT_WORKER": "2"}, None)
    with pytest.raises(ConfigError, match="--timeout"):
        config.build({"timeout": "-1"}, {}, None)


def test_a_file_not_in_utf8_or_not_a_file_is_one_line(tmp_path):
    path = tmp_path / "sockact.toml"
    path.write_bytes('workers = 2\n# caf\u00e9, saved as Latin-1\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        config.build({}, {}, str(path))
    assert str(err.value) == (f"config file {path}: not valid TOML: line 2 is not UTF-8 (byte 0xe9); "
                              "save the file as UTF-8")
    with pytest.raises(ConfigError, match=r"^config file .*: Is a directory$"):
        config.build({}, {}, str(tmp_path))


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        config.build({}, {}, "/nonexistent/sockact.toml")


def test_listener_tables_overlay_defaults(tmp_path):
    path = write(tmp_path, 'app = "site:app"\nkeepalive = 30\n[listeners.api]\napp = "api:app"\nkeepalive = 5\n')
    cfg = config.build({}, {}, path)
    api, web = cfg.listener("api"), cfg.listener("http")
    assert (api.app, api.keepalive) == ("api:app", 5.0)
    assert (web.app, web.keepalive) == ("site:app", 30.0)


def test_booleans_and_lists_from_strings():
    cfg = config.build({}, {"SOCKACT_PRELOAD": "yes", "SOCKACT_BIND": "127.0.0.1:1 unix:/run/x.sock"}, None)
    assert cfg.preload is True
    assert cfg.bind == ("127.0.0.1:1", "unix:/run/x.sock")


def test_describe_round_trips_through_toml(tmp_path):
    cfg = config.build({"workers": "7"}, {}, write(tmp_path, '[listeners.api]\napp = "api:app"\n'))
    text = "\n".join(config.describe(cfg))
    again = config.build({}, {}, write(tmp_path, text))
    assert again.workers == 7 and again.listener("api").app == "api:app"


def test_every_setting_has_flag_env_help_and_valid_default():
    for s in config.SETTINGS:
        assert s.flag.startswith("--") and s.env.startswith("SOCKACT_") and s.help
        if s.default is not None:
            raw = list(s.default) if isinstance(s.default, tuple) else s.default
            assert s.parse(raw) == s.default


def test_virtualenv_checks(tmp_path):
    with pytest.raises(ConfigError, match=r"no pyvenv\.cfg"):
        config.check_virtualenv(str(tmp_path))
    (tmp_path / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "lib" / "python2.7" / "site-packages").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"built for python2\.7"):
        config.check_virtualenv(str(tmp_path))


def test_config_is_a_typed_dataclass_whose_fields_declare_the_settings():
    import dataclasses
    import typing

    fields = {f.name: f for f in dataclasses.fields(config.Config)}
    hints = typing.get_type_hints(config.Config)
    assert {s.name for s in config.SETTINGS} == {n for n, f in fields.items() if "setting" in f.metadata}
    for s in config.SETTINGS:
        assert fields[s.name].metadata["setting"].help == s.help and fields[s.name].default == s.default
    for s in config.SETTINGS:
        assert hints[s.name] is not typing.Any, s.name
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.Config().workers = 3  # type: ignore[misc]
    # A listener's settings are exactly the per-listener ones, plus its name, with the same types.
    listener_hints = typing.get_type_hints(config.ListenerConfig)
    assert set(listener_hints) == set(config.LISTENER_KEYS) | {"name"}
    assert all(listener_hints[k] == hints[k] for k in config.LISTENER_KEYS)


def test_settings_other_engineers_build_are_declared():
    cfg = config.build({}, {}, None)
    assert cfg.threads == 1 and cfg.handback_after == 0.05
    assert cfg.access_logfile is None and cfg.error_logfile is None and cfg.root_path == ""
    assert cfg.access_logformat == '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
    assert cfg.listener("http").park_after == 0.1
    assert cfg.listener("http").forwarded_allow_ips == "127.0.0.1,::1,unix"
    for bad in ({"threads": "0"}, {"park_after": "0"}, {"handback_after": "-1"}, {"forwarded_allow_ips": "x"}):
        with pytest.raises(ConfigError, match="--" + next(iter(bad)).replace("_", "-")):
            config.build(bad, {}, None)


def test_thread_counts_are_bounded_by_the_scoreboard_and_the_ceiling_by_the_floor():
    from sockact.ipc.scoreboard import MAX_THREADS

    assert config.build({"threads": str(MAX_THREADS), "max_threads": str(MAX_THREADS)}, {}, None).threads == 64
    # A line per thread on the scoreboard: beyond it, one line naming the key (no silent clamp).
    with pytest.raises(ConfigError, match=r"^option --threads: invalid value '65': must be <= 64$"):
        config.build({"threads": "65"}, {}, None)
    with pytest.raises(ConfigError, match=r"^environment: SOCKACT_MAX_THREADS: .*must be <= 64$"):
        config.build({}, {"SOCKACT_MAX_THREADS": "100"}, None)
    with pytest.raises(ConfigError, match=r"^max_threads = 2 \(option --max-threads\) is below threads = 4 \(option "):
        config.build({"threads": "4", "max_threads": "2"}, {}, None)
    assert config.BY_NAME["threads"].kind == "integer 1..64"


def test_the_thread_mode_says_how_a_wsgi_app_runs():
    def mode(**values: str) -> str:
        return config.build(values, {}, None).thread_mode()

    assert config.build({}, {}, None).thread_ceiling == 1
    assert mode() == "one request at a time per worker (1 app thread, as gunicorn's sync worker)"
    assert mode(threads="4").startswith("4 app threads per worker, a fixed pool")
    assert config.build({"threads": "4"}, {}, None).thread_ceiling == 4
    grows = config.build({"max_threads": "16", "thread_idle_timeout": "5"}, {}, None)
    assert grows.thread_ceiling == 16
    assert grows.thread_mode().startswith("1 to 16 app threads per worker: one more starts while every "
                                          "thread is in a call, and those beyond 1 exit after 5 s idle")


def test_timeout_zero_turns_it_off():
    assert config.build({"timeout": "0"}, {}, None).timeout == 0
    assert "0 turns the timeout off" in config.BY_NAME["timeout"].help


@pytest.mark.parametrize(("spec", "app"), [
    ("myproject.wsgi", "myproject.wsgi:application"),
    ("app:app", "app:app"),
    ("pkg.mod:factory.app", "pkg.mod:factory.app"),
])
def test_a_bare_module_means_its_application(spec, app):
    assert config.build({"app": spec}, {}, None).app == app


def test_script_name_gives_root_path_unless_set():
    assert config.build({}, {"SCRIPT_NAME": "/app/"}, None).root_path == "/app"
    assert config.build({"root_path": "/x"}, {"SCRIPT_NAME": "/app"}, None).root_path == "/x"
    with pytest.raises(ConfigError, match="SCRIPT_NAME"):
        config.build({}, {"SCRIPT_NAME": "app"}, None)


def test_env_pythonpath_and_chdir():
    cfg = config.build({"env": ["A=1", "B=two words"], "pythonpath": "/a, /b", "chdir": "/srv"}, {}, None)
    assert cfg.env == ("A=1", "B=two words") and cfg.pythonpath == ("/a", "/b") and cfg.chdir == "/srv"
    assert config.build({}, {"SOCKACT_ENV": "A=1 B=2"}, None).env == ("A=1", "B=2")
    with pytest.raises(ConfigError, match=r"option --env: .*expected KEY=VALUE"):
        config.build({"env": ["NOEQUALS"]}, {}, None)


def test_reload_is_refused_with_preload_and_under_systemd():
    with pytest.raises(ConfigError, match=r"^reload = true \(option --reload\) cannot be combined with preload = true"):
        config.build({"reload": True, "preload": True}, {}, None)
    with pytest.raises(ConfigError, match=r"^reload: .*--reload-under-systemd"):
        config.build({"reload": True}, {"INVOCATION_ID": "abc"}, None)
    assert config.build({"reload": True, "reload_under_systemd": True}, {"INVOCATION_ID": "abc"}, None).reload


def test_the_listener_names_the_settings_give_must_exist(tmp_path):
    cfg = config.build({}, {}, write(tmp_path, '[listeners.api]\nkeepalive = 5\n'))
    cfg.check_names(["http", "api"])
    with pytest.raises(ConfigError, match=r"table 'listeners.api': no listener is named 'api' "
                                          r"\(the listeners: http, metrics\)"):
        cfg.check_names(["http", "metrics"])
    config.Config().check_names(["http"])  # no metrics listener: no metrics, as the default says
    with pytest.raises(ConfigError, match="metrics_listener: no listener is named 'prom'"):
        config.build({"metrics_listener": "prom"}, {}, None).check_names(["http", "metrics"])


def test_a_reload_refuses_an_empty_file_and_an_app_that_vanished(tmp_path):
    path = write(tmp_path, 'app = "myapp:app"\n')
    running = config.build({}, {}, path)
    config.check_reload(running, config.build({}, {}, path), ["http"])  # unchanged: fine
    path = write(tmp_path, "")
    with pytest.raises(ConfigError, match="empty"):
        config.check_reload(running, config.build({}, {}, path), ["http"])
    path = write(tmp_path, "workers = 3\n")
    with pytest.raises(ConfigError, match="name no app for listener 'http', which serves 'myapp:app'"):
        config.check_reload(running, config.build({}, {}, path), ["http"])
    demo = config.build({}, {}, None)
    config.check_reload(demo, config.build({}, {}, path), ["http"])  # the demo before and after: fine


def test_a_reload_names_only_the_changed_settings_a_restart_applies():
    running = config.build({}, {}, None)
    new = config.build({"error_logfile": "/var/log/s.log", "bind": ["127.0.0.1:9000", "unix:/run/s.sock"],
                        "workers": 9, "keepalive": 3.0}, {}, None)
    assert config.unapplied(running, new) == [
        'bind: ["127.0.0.1:8000"] -> ["127.0.0.1:9000", "unix:/run/s.sock"]',
        'error_logfile: unset -> "/var/log/s.log"',
    ]
    assert config.unapplied(new, new) == []
    # under socket activation, bind is ignored (said at start), and no restart applies it either
    assert config.unapplied(running, new, activated=True) == ['error_logfile: unset -> "/var/log/s.log"']
    marked = {s.name for s in config.SETTINGS if s.restart}
    assert {"bind", "backlog", "metrics_listener", "preload", "hooks", "error_logfile", "log_level"} <= marked
    assert not marked & {"workers", "keepalive", "timeout", "app", "access_logfile", "max_requests"}
    assert "a reload leaves the running value" in config.BY_NAME["log_level"].described
    assert config.BY_NAME["workers"].described == config.BY_NAME["workers"].help

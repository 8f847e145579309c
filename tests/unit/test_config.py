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
    ('[listeners.api]\napp = "x"\n', "key 'listeners.api.app'"),
    ("workers = [\n", "not valid TOML"),
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
        config.build({"timeout": "0"}, {}, None)


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

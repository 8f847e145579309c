"""The [hooks] table: parsed from the file and the environment, checked, and shown as TOML again."""

import pytest

from sockact import config
from sockact.errors import ConfigError
from sockact.hooks import Hooks, Loaded


def test_the_table_from_a_file_and_the_environment(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('hooks.post_fork = "proj.hooks:post_fork"\n')
    assert config.build({}, {}, str(path)).hooks == Hooks(post_fork="proj.hooks:post_fork")
    path.write_text('[hooks]\nworker_exit = "proj.hooks:bye"\non_starting = "/srv/app/gunicorn.conf.py:on_starting"\n')
    cfg = config.build({}, {"SOCKACT_HOOKS": "when_ready=proj.hooks:ready"}, str(path))
    assert cfg.hooks == Hooks(when_ready="proj.hooks:ready")  # the environment wins, whole
    cfg = config.build({}, {}, str(path))
    # check prints it back as TOML that reads the same
    line = next(line for line in config.describe(cfg) if line.startswith("hooks = "))
    path.write_text(line + "\n")
    assert config.build({}, {}, str(path)).hooks == cfg.hooks


@pytest.mark.parametrize(("text", "error"), [
    ('hooks.pre_fork = "a:b"', "no hook is called 'pre_fork'"),
    ('hooks.post_fork = "a.b"', "post_fork: expected 'module:callable'"),
    ('hooks.post_fork = 3', "post_fork: expected 'module:callable'"),
    ('hooks = "post_fork"', "expected NAME=module:callable pairs"),
])
def test_a_bad_table_names_the_hook(tmp_path, text, error):
    path = tmp_path / "s.toml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError, match="key 'hooks'") as err:
        config.build({}, {}, str(path))
    assert error in str(err.value)


def test_a_hook_that_raises_is_logged_not_raised(caplog):
    calls = []
    hooks = Loaded({"when_ready": lambda server: calls.append(server) or 1 / 0})
    hooks.call("when_ready", "srv")
    hooks.call("on_reload", "srv")  # unset: nothing
    assert calls == ["srv"]
    assert "hook when_ready" in caplog.text and "ZeroDivisionError" in caplog.text
    with pytest.raises(ZeroDivisionError):
        hooks.call_or_raise("when_ready", "srv")

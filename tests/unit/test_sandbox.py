"""A path that is not there is explained: the missing directory, and ProtectHome for a home."""

import pytest

from sockact.config import check_virtualenv
from sockact.errors import ConfigError
from sockact.sandbox import explain_missing


def test_a_missing_path_names_its_first_missing_directory(tmp_path):
    assert explain_missing(str(tmp_path / "a" / "b" / ".venv")) == f"{tmp_path / 'a'} does not exist"


@pytest.mark.parametrize("path", ["/home/nobody-here-at-all/site/.venv", "/root/nobody-here/app",
                                  "/run/user/999999/app"])
def test_a_path_under_a_home_names_protecthome(path):
    said = explain_missing(path)
    assert "ProtectHome=yes" in said and "is empty" in said and "ProtectHome=read-only" in said


def test_a_virtualenv_that_is_not_there_is_not_called_a_venv_without_pyvenv_cfg():
    with pytest.raises(ConfigError, match=r"^virtualenv /home/nobody-here-at-all/\.venv: .*ProtectHome=yes") as exc:
        check_virtualenv("/home/nobody-here-at-all/.venv")
    assert "pyvenv.cfg" not in str(exc.value)


def test_a_directory_without_pyvenv_cfg_still_says_so(tmp_path):
    with pytest.raises(ConfigError, match=r"no pyvenv\.cfg there"):
        check_virtualenv(str(tmp_path))


def test_a_chdir_under_a_hidden_home_names_protecthome():
    from sockact.apploader import prepare

    with pytest.raises(ConfigError, match=r"^chdir /home/nobody-here-at-all/site: .*ProtectHome=yes"):
        prepare("/home/nobody-here-at-all/site", (), (), {})

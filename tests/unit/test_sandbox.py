"""A path that is not there is explained: the missing directory, and ProtectHome for a home."""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from sockact.config import check_virtualenv
from sockact.config.sandbox import explain_missing
from sockact.errors import ConfigError


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


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to look as another user")
def test_a_directory_closed_to_the_user_is_named_as_such():
    # a home of mode 0700, seen by another user (the service's): a real permission, not a mock
    base = Path(tempfile.mkdtemp(dir="/var/tmp"))  # pytest's tmp_path is closed to other users
    try:
        base.chmod(0o755)
        closed = base / "alice"
        (closed / "site").mkdir(parents=True)
        closed.chmod(0o700)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.setuid(65534)
                os.write(write, explain_missing(str(closed / "site" / ".venv")).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        said = os.read(read, 4096).decode()
        os.close(read)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    finally:
        shutil.rmtree(base)
    assert said == (f"{closed} is closed to this user (uid 65534): the service's user must be able "
                    "to enter every directory on the way (chmod o+x), or keep the app under /srv")

"""Fixtures of the system tests: one booted container for the session, one clean deployment per test.

The tests are skipped only where containers cannot run at all (not root, no systemd-nspawn);
``make test`` installs systemd-container, so in CI they run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from nspawn import Container, free_port, missing_prerequisite
from sysdeploy import Deployment, install


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "container" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.system)


@pytest.fixture(autouse=True)
def journal_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """The journal of a test's ``box`` after the test; pytest shows it only for a failed test.

    The units are sockact's, and those a module names in its JOURNAL_UNITS.
    """
    yield
    if "box" not in request.fixturenames:
        return
    box = request.getfixturevalue("box")
    if box.leader is not None:
        units = ("sockact*", *getattr(request.module, "JOURNAL_UNITS", ()))
        flags = " ".join(f"-u '{unit}'" for unit in units)
        print(box.run(f"journalctl -q --no-pager -n 60 {flags}", check=False).stdout)


@pytest.fixture(scope="session")
def container() -> Iterator[Container]:
    """A booted overlay of the host with sockact installed as the .deb would install it."""
    reason = missing_prerequisite()
    if reason:
        pytest.skip(reason)
    with Container() as booted:
        install(booted)
        yield booted


@pytest.fixture
def sockact(container: Container) -> Iterator[Deployment]:
    """sockact.socket on a free port of 127.0.0.1; everything the test changed is undone after."""
    deployment = Deployment(container)
    try:
        deployment.begin(free_port())
        yield deployment
    finally:
        deployment.reset()

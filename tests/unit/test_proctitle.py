"""Process titles: the text, and the unit name read from the cgroup."""

from sockact import proctitle


def test_titles():
    assert proctitle.format_title("supervisor", "sockact.service") == "sockact: supervisor [sockact.service]"
    assert proctitle.format_title("worker", "myapp.wsgi", 3) == "sockact: worker 3 [myapp.wsgi]"
    assert proctitle.format_title("worker") == "sockact: worker"


def test_unit_name_only_under_systemd():
    cgroup = "0::/system.slice/sockact.service\n"
    assert proctitle.unit_name({"INVOCATION_ID": "x"}, cgroup) == "sockact.service"
    assert proctitle.unit_name({}, cgroup) == ""
    assert proctitle.unit_name({"INVOCATION_ID": "x"}, "0::/user.slice/session-1.scope\n") == "session-1.scope"
    assert proctitle.unit_name({"INVOCATION_ID": "x"}, "0::/\n") == ""

"""What sockact asks of systemd, in the supervisor: the listening sockets (activation.py), sd_notify
and the watchdog (notify.py), the fd store (fdstore.py), a cgroup per worker (cgroups.py) and
memory pressure (pressure.py)."""

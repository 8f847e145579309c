"""The supervisor process: one thread, one selector, carrying out what the pool and the dispatcher decide.

core.Supervisor is the coordinator (the loop, signals, the pool's actions, timers); the other
modules here each keep one of its books: channels (the workers' messages), exits (a worker's
death and its orphans), store (systemd's fd store), scrape (the metrics listener), memwatch
(the workers' memory), forking (starting a worker) and stopping (drain_delay, the drain, the
quick stop).
"""

from sockact.supervisor.core import HANDLED_SIGNALS, Supervisor

__all__ = ["HANDLED_SIGNALS", "Supervisor"]

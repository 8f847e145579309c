"""The contracts between the supervisor and its workers: both processes read and write these.

handoff.py is the channel (messages and the fds that ride with them); scoreboard.py the shared
memory where app threads stamp their calls; tally.py the shared memory where workers publish their
request counts.
"""

"""The worker process: forked by the supervisor, it serves the connections it is handed.

shell.py sets the process up, loads the app and says READY. Below both runners: the connection
owner (owner.py) with each connection's state table (connstates.py), and the channel to the
supervisor (channel.py). wsgirunner.py runs a WSGI app in app threads (appthreads.py);
asgirunner.py runs an ASGI app on an asyncio loop.
"""

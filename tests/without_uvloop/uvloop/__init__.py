"""First on a server's PYTHONPATH, this hides the installed uvloop: its ASGI worker runs on asyncio's own loop,
whose reports of a client's reset differ from uvloop's (sockact/asgi/conn.py, watch_anew)."""

raise ImportError("uvloop hidden: the worker runs on asyncio's own loop")

"""ASGI 3 apps on the same workers: an asyncio loop per worker over the same HTTP engine and channel.

interface.py tells an ASGI app from a WSGI one; scope.py builds scopes; cycle.py runs one HTTP
request-response cycle; lifespan.py the lifespan protocol; websocket.py the WebSocket scope, over
websockets or wsproto (wsprotocols.py); conn.py one connection on the loop. The worker's runner
that drives them is sockact/worker/asgirunner.py, the asyncio counterpart of the WSGI runner.
"""

"""The ASGI lifespan protocol: the app's startup before a worker serves, its shutdown when it stops.

An app that answers lifespan.startup.failed stops the worker's boot with AppLoadError, which
halts sockact as an app that cannot import does. ``lifespan = on`` also takes an exception or a
wrong answer for a failure; ``auto``, as uvicorn's, takes them for an app that does not do
lifespan, and goes on without it (Starlette and FastAPI turn a failing startup handler into
lifespan.startup.failed). ``off`` never calls the app with a lifespan scope.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sockact.asgi.scope import ASGI_VERSION
from sockact.errors import AppLoadError

log = logging.getLogger("sockact.worker")


class Lifespan:
    def __init__(self, app: Any, mode: str, spec: str) -> None:
        self.app = app
        self.mode = mode
        self.spec = spec  # the app's 'module:callable', for the log
        self.state: dict[str, Any] = {}  # shared with every request's scope (as a copy)
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._running = False  # startup completed: shutdown is due
        self._taken = False  # the app took lifespan.startup: it does lifespan

    async def startup(self) -> None:
        """Run the app's startup; raises AppLoadError when it fails (or refuses, with mode 'on')."""
        if self.mode == "off":
            return
        scope = {"type": "lifespan", "asgi": ASGI_VERSION, "state": self.state}
        self._task = asyncio.get_running_loop().create_task(self._main(scope))
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await self._reply()
        if reply is not None and reply["type"] == "lifespan.startup.failed":
            why = reply.get("message") or "no reason given"
            raise AppLoadError(f"app '{self.spec}': lifespan startup failed: {why}")
        if reply is None or reply["type"] != "lifespan.startup.complete":
            exc = self._task.exception() if self._task.done() and not self._task.cancelled() else None
            what = (_describe(exc) if exc else "the app returned without answering") if reply is None \
                else f"the app answered {reply['type']!r}"
            self._task.cancel()
            if self.mode == "auto" and not self._taken:
                # As uvicorn's auto: an app that fails the lifespan scope does not do lifespan.
                log.info("app '%s' does not do lifespan (%s); going on without it", self.spec, what)
                return
            if self.mode == "auto":
                # It took the startup message, then failed: its startup, not the scope. The spec says go on.
                log.error("app '%s': lifespan startup failed: %s; going on without lifespan, as 'auto' does "
                          "(lifespan = \"on\" stops instead)", self.spec, what, exc_info=exc)
                return
            raise AppLoadError(f"app '{self.spec}': lifespan startup failed: {what}")
        self._running = True

    async def shutdown(self, timeout: float) -> None:
        """Run the app's shutdown, for at most ``timeout`` seconds; never raises."""
        if not self._running or self._task is None:
            return
        self._running = False
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            reply = await asyncio.wait_for(self._reply(), timeout)
        except TimeoutError:
            log.warning("app '%s': lifespan shutdown did not finish in %.1fs", self.spec, timeout)
            self._task.cancel()
            return
        if reply is None or reply["type"] != "lifespan.shutdown.complete":
            why = reply.get("message") if reply else "the app returned without answering"
            log.error("app '%s': lifespan shutdown failed: %s", self.spec, why)

    async def _reply(self) -> dict[str, Any] | None:
        """The app's next message, or None when its lifespan call ended first."""
        assert self._task is not None
        getter = asyncio.ensure_future(self._replies.get())
        await asyncio.wait({getter, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        return None

    async def _main(self, scope: dict[str, Any]) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:
            if self.mode == "on" or self._running:
                log.error("app '%s': lifespan raised %s", self.spec, _describe(exc), exc_info=exc)
            raise

    async def _receive(self) -> dict[str, Any]:
        self._taken = True
        return await self._inbox.get()

    async def _send(self, message: dict[str, Any]) -> None:
        await self._replies.put(message)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"

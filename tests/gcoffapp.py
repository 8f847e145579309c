"""bareapp, from a module that turns the garbage collector off when it is imported, as some apps do."""

import gc

from bareapp import app

gc.disable()

__all__ = ["app"]

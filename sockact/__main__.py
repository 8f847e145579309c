"""``python -m sockact`` is the same as the ``sockact`` command."""

from .cli import main

raise SystemExit(main())

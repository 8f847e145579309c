"""``python -m sockact`` is the same as the ``sockact`` command."""

from sockact.cli import main

raise SystemExit(main())

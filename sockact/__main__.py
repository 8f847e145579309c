"""The ``sockact`` command's entry point; ``python -m sockact`` is the same command."""

from __future__ import annotations

from sockact import gcpause


def main() -> int:
    gcpause.pause()  # until the supervisor's first fork (gcpause.py says why)
    from sockact.cli import main as cli_main

    return cli_main()


if __name__ == "__main__":
    raise SystemExit(main())

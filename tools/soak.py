"""The long versions of the hostile-input and endurance tests, whose short versions run in `make test`.

    .venv/bin/python tools/soak.py fuzz         the running server, SOCKACT_FUZZ_CASES cases (default 1,000,000)
    .venv/bin/python tools/soak.py endurance    SOCKACT_SOAK_REQUESTS requests (default 5,000,000)
    .venv/bin/python tools/soak.py engine       the HTTP engine, hypothesis's ``long`` profile
                                                (SOCKACT_FUZZ_EXAMPLES examples per test, default 50,000)

Each runs the same test as CI, with the size raised, and prints its figures; docs/robustness.md
records the last ones. Set SOCKACT_FUZZ_SEED for another sequence of fuzz cases.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = {
    "fuzz": ("tests/integration/test_fuzz_server.py", {"SOCKACT_FUZZ_CASES": "1000000"}),
    "endurance": ("tests/integration/test_endurance.py", {"SOCKACT_SOAK_REQUESTS": "5000000"}),
    "engine": ("tests/unit/http/test_http_fuzz.py", {"SOCKACT_FUZZ_PROFILE": "long"}),
}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in RUNS:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    test, defaults = RUNS[argv[0]]
    env = {**defaults, **os.environ}
    for name in defaults:
        print(f"{name}={env[name]}", flush=True)
    # -s: the tests print their figures; no timeout, a long run takes as long as it takes.
    return subprocess.call([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", test],
                           cwd=REPO, env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

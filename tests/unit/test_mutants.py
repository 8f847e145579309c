"""tools/mutants.py plants each of its bugs by replacing one exact piece of a source file; a piece the
code has moved away from would make its mutant a no-op that no run notices."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import mutants  # noqa: E402


def test_every_mutant_finds_its_piece_exactly_once():
    stale = {m.name: (ROOT / m.path).read_text().count(m.old) for m in mutants.MUTANTS}
    assert {name: n for name, n in stale.items() if n != 1} == {}

"""Plant known one-line bugs, one at a time, and check that the tests named for each catch it.

Each mutant replaces one exact piece of a source file; the tests named for it run with the bug in,
and must fail. The file is restored whatever happens. A mutant whose piece is not found once is
reported as stale (the code moved on: update the piece). Run from the project's root:

    .venv/bin/python tools/mutants.py            # every mutant
    .venv/bin/python tools/mutants.py NAME...    # some of them

Exit status 0 when every mutant was caught.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


UNIT = "tests/unit/"
INTEG = "tests/integration/"

MUTANTS = (
    Mutant("handoff-proxy-length", "sockact/handoff.py", "if len(buf) < proxy_end:", "if len(buf) < end:",
           (UNIT + "test_handoff.py::test_a_message_cut_inside_its_proxy_client_is_refused_and_its_fd_closed",)),
    Mutant("boot-deadline-old-timeout", "sockact/pool.py", "timeout = self._generation_config(m).timeout\n",
           "timeout = self.serving_config.timeout\n",
           (UNIT + "test_pool.py::test_a_new_generation_boots_within_its_own_timeout",)),
    Mutant("backoff-linear", "sockact/pool.py", "0.1 * 2 ** self.boot_failures", "0.2 * self.boot_failures",
           (UNIT + "test_pool.py::test_the_respawn_backoff_doubles_up_to_its_cap",)),
    Mutant("stall-sticks", "sockact/states.py", '(_W.BUSY, "resume"): _W.READY', '(_W.BUSY, "resume"): _W.BUSY',
           (UNIT + "test_pool.py::test_a_stalled_worker_that_moves_again_gets_work_again",)),
    Mutant("stalled-keeps-parsed", "sockact/eventloop.py", "if held.in_call or held.linger_until:\n",
           "if held.in_call or held.linger_until or held.request is not None:\n",
           (INTEG + "test_worker_loop.py::test_a_stalled_worker_hands_back_a_request_parsed_and_waiting",)),
    Mutant("refused-closed-at-once", "sockact/eventloop.py",
           "held.linger_until = time.monotonic() + LINGER_SECONDS", "return self._close(held)",
           (INTEG + "test_hostile_clients.py::test_a_refused_request_is_answered_and_the_rest_of_its_input_dropped",)),
    Mutant("accept-ignores-budget", "sockact/acceptor.py", "while self.watching and self.held < self.budget:",
           "while self.watching:", (UNIT + "test_acceptor.py",)),
    Mutant("stop-loses-a-parked-one", "sockact/supervisor.py", "for conn in self.parked.take_all():\n"
           "            self._unregister(conn.fd)\n            self._store(conn)",
           "for conn in self.parked.take_all()[1:]:\n            self._unregister(conn.fd)\n"
           "            self._store(conn)",
           (INTEG + "test_store_handover.py::test_every_way_a_connection_waits_at_a_stop_is_stored",)),
    Mutant("head-error-has-body", "sockact/http/engine.py", '(b"" if head_only else body)', "body",
           (INTEG + "test_http_server.py::test_an_error_answer_to_head_has_no_body",)),
    Mutant("head-empty-is-length-0", "sockact/http/server.py",
           'whole=None if request.method == b"HEAD" else 0', "whole=0",
           (INTEG + "test_http_server.py::test_a_head_whose_app_wrote_nothing_says_no_length",)),
    Mutant("body-buffer-ignores-buffered", "sockact/http/server.py", "unread + engine.buffered >", "unread >",
           (INTEG + "test_http_server.py::test_body_buffer_counts_the_body_bytes_already_read",)),
    Mutant("websocket-error-closes-1000", "sockact/asgi/websocket.py", "UNEXPECTED if failed else 1000",
           "1000",
           (INTEG + "test_asgi.py::test_an_app_error_on_an_accepted_websocket_closes_it_with_1011",)),
    Mutant("timeout-field-raw", "sockact/supervisor.py", "http_request=escape(view.line))",
           "http_request=view.line)",
           (INTEG + "test_logging.py::test_the_timeout_records_journal_field_is_escaped",)),
    Mutant("tally-retire-replaces", "sockact/tally.py",
           "self.retired = [a + b for a, b in zip(self.retired, self.read(slot, threads), strict=True)]",
           "self.retired = self.read(slot, threads)",
           (UNIT + "test_tally.py::test_each_retired_worker_adds_to_the_totals",)),
    Mutant("metrics-17-clients", "sockact/metricserver.py", "MAX_CLIENTS = 16", "MAX_CLIENTS = 17",
           (INTEG + "test_metricserver.py::test_at_most_16_scrape_connections_are_held",)),
    Mutant("boolean-typo-is-false", "sockact/parsers.py",
           "if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:", "if isinstance(value, str):",
           (UNIT + "test_config.py::test_bad_files_name_the_key",)),
    Mutant("health-path-without-slash", "sockact/parsers.py", '(not value.startswith("/") or ', "(",
           (UNIT + "test_config.py::test_bad_files_name_the_key",)),
    Mutant("done-loses-an-id", "sockact/eventloop.py", "range(0, len(ids), handoff.MAX_DONE)",
           "range(0, len(ids), handoff.MAX_DONE + 1)",
           (UNIT + "test_handoff.py::test_a_turn_that_closes_more_than_a_done_holds_reports_every_id",)),
    Mutant("outbox-overtaken", "sockact/workers.py", "if not self.outbox and self._send(conn):",
           "if self._send(conn):",
           (UNIT + "test_outbox.py::test_a_new_connection_waits_behind_those_queued_for_room",)),
    # The code added with max_worker_memory, audited the same way.
    Mutant("memory-recycle-retires-at-once", "sockact/pool.py", "if successor_first:", "if False:",
           (UNIT + "test_pool.py::test_a_memory_recycle_starts_the_successor_first_then_retires_the_old_one",)),
    Mutant("memory-replaced-still-counted", "sockact/pool.py",
           "m.generation == self.current.number and not m.replaced", "m.generation == self.current.number",
           (UNIT + "test_pool.py::test_a_memory_recycle_starts_the_successor_first_then_retires_the_old_one",)),
    Mutant("memory-replaced-never-retired", "sockact/pool.py",
           "old = [x for x in self.members.values() if x.replaced and x.state in LIVE] or self._old_members()",
           "old = self._old_members()",
           (UNIT + "test_pool.py::test_a_memory_recycle_starts_the_successor_first_then_retires_the_old_one",)),
    Mutant("memory-uss-misses-dirty-pages", "sockact/memory.py", 'b"Private_Clean:", b"Private_Dirty:", ',
           'b"Private_Clean:", ', (UNIT + "test_memory.py",)),
    Mutant("memory-rss-gate-inverted", "sockact/supervisor.py", "and (memory.rss(w.pid) or 0) > limit)",
           "and (memory.rss(w.pid) or 0) < limit)",
           (INTEG + "test_memory_recycle.py",)),
    Mutant("memory-reason-lost", "sockact/metrics.py", "        return recycled\n", '        return "max-requests"\n',
           (UNIT + "test_metrics_exposition.py::test_restart_reason",)),
    Mutant("memory-measures-rss", "sockact/supervisor.py", "used = memory.uss(pid)", "used = memory.rss(pid)",
           (INTEG + "test_memory_recycle.py::test_pages_shared_with_a_preloaded_app_do_not_count_and_every_"
            "worker_is_looked_at",)),
    Mutant("size-units-decimal", "sockact/parsers.py", '"M": 1 << 20', '"M": 10 ** 6', (UNIT + "test_memory.py",)),
    Mutant("memory-check-on-old-pid-only", "sockact/supervisor.py",
           "pid = next((p for p in over if p > self._memory_last), over[0])", "pid = over[0]",
           (INTEG + "test_memory_recycle.py",)),
)


def run(mutant: Mutant) -> tuple[str, str]:
    """('caught' | 'MISSED' | 'stale', the first line that says why a test failed)."""
    path = ROOT / mutant.path
    original = path.read_text()
    if original.count(mutant.old) != 1:
        return "stale", ""
    try:
        path.write_text(original.replace(mutant.old, mutant.new))
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                                 *mutant.tests], cwd=ROOT, capture_output=True, text=True)
    finally:
        path.write_text(original)
    why = next((line for line in result.stdout.splitlines() if line.startswith("E ")), "")
    return ("caught" if result.returncode else "MISSED"), why


def main(names: list[str]) -> int:
    chosen = [m for m in MUTANTS if not names or m.name in names]
    outcomes = {}
    for mutant in chosen:
        outcomes[mutant.name], why = run(mutant)
        print(f"{outcomes[mutant.name]:7} {mutant.name}  ({', '.join(mutant.tests)})", flush=True)
        if why:
            print(f"        {why[:160]}", flush=True)
    caught = sum(o == "caught" for o in outcomes.values())
    print(f"{caught} of {len(chosen)} caught")
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

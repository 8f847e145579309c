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


TIMEOUT = 300  # seconds for one mutant's tests; a test that hangs with the bug in has not passed
UNIT = "tests/unit/"
INTEG = "tests/integration/"
WS_MISTAKES_TEST = (INTEG + "test_app_response_misbehaviour.py::test_a_websocket_message_no_frame_may_carry_is_an_"
                    "app_error_closed_with_1011",)
PATHSEND_TEST = (INTEG + "test_app_response_misbehaviour.py::test_pathsend_of_what_is_no_regular_file_is_a_500_and_"
                 "holds_no_loop",)
HUNDRED_CALLS_TEST = "test_asgi.py::test_a_killed_worker_answers_each_of_a_hundred_calls_at_once_with_a_502"
SPOOL_TOTAL_TEST = "test_body_spool.py::test_spooled_bodies_past_the_workers_total_get_503_until_one_ends"
RELOAD_NAMES = "test_a_reload_names_each_changed_setting_it_leaves_for_a_restart_and_applies_the_rest"

MUTANTS = (
    Mutant("owned-rest-loses-a-head-in-part", "sockact/worker/owner.py",
           "mark[at + 1] = written | (IN_HEAD if in_head else 0)", "mark[at + 1] = written",
           (UNIT + "test_worker_states.py::test_a_connection_marks_itself_where_the_scoreboard_reads_its_rest",
            INTEG + "test_worker_death.py::test_a_head_the_worker_held_in_part_when_it_died_gets_a_408")),
    Mutant("host-value-unchecked", "sockact/http/rules.py",
           "if value.translate(None, _REG_NAME_BYTES):  # more than a name", "if False:  # more than a name",
           (UNIT + "http/test_http_engine.py::test_a_host_field_that_is_not_host_and_port_gets_400",
            INTEG + "test_hostile_clients.py::test_a_host_field_that_is_not_host_and_port_gets_400_and_the_next_"
            "client_is_served")),
    Mutant("host-port-unchecked", "sockact/http/rules.py",
           "(len(rest) == 1 or rest[1:].isdigit())", "True",
           (UNIT + "http/test_http_engine.py::test_a_host_field_that_is_not_host_and_port_gets_400",)),
    Mutant("barrier-waits-with-select", "sockact/systemd/notify.py",
           "return sent and bool(poller.poll(max(0, timeout) * 1000))",
           "return sent and bool(select.select([r], [], [], timeout)[0])",
           (UNIT + "test_fdstore.py::test_the_barrier_returns_once_systemd_has_read_what_was_sent",)),
    Mutant("whole-response-date-of-any-second", "sockact/wsgi/server.py",
           "if (known := DATE.last[0])[0] <= now < known[1] else None", "if (known := DATE.last[0]) else None",
           (INTEG + "test_response_fields.py::test_the_date_of_each_response_on_a_keepalive_connection_is_its_own_"
            "second",)),
    Mutant("inline-call-stamps-the-last-requests-line", "sockact/worker/wsgirunner.py",
           "line = held.call_line if request is held.call_of else", "line = held.call_line if True else",
           (INTEG + "test_supervisor.py::test_stuck_worker_is_killed_and_others_serve",)),
    Mutant("access-entry-never-renewed", "sockact/wsgi/server.py",
           "if memo is None or request is not memo.key:", "if memo is None:",
           (INTEG + "test_logging.py::test_each_request_on_a_keepalive_connection_gets_its_own_access_line",)),
    Mutant("inline-call-stamps-no-connection", "sockact/worker/wsgirunner.py",
           "self.slots[0].begin(line, held.msg.conn_id, now=started)",
           "self.slots[0].begin(line, 0, now=started)",
           (INTEG + "test_supervisor.py::test_a_worker_killed_before_answering_gives_its_client_a_502",)),
    Mutant("inline-call-leaves-a-new-connection-unwatched", "sockact/worker/wsgirunner.py",
           "if not (held.watched and self.in_call < self.ceiling", "if not (self.in_call < self.ceiling",
           (INTEG + "test_worker_loop.py::test_the_loop_threads_own_calls_serve_each_kind_of_request_in_turn",)),
    Mutant("whole-response-short-unlogged", "sockact/wsgi/server.py",
           "if not engine.keep_alive and (engine.length_left or engine.dropped):",
           "if engine.keep_alive and (engine.length_left or engine.dropped):",
           (INTEG + "test_short_responses.py",)),
    Mutant("handoff-proxy-length", "sockact/ipc/handoff.py", "if size < proxy_end:", "if size < end:",
           (UNIT + "test_handoff.py::test_a_message_cut_inside_its_proxy_client_is_refused_and_its_fd_closed",)),
    Mutant("boot-deadline-old-timeout", "sockact/policy/pool.py", "timeout = self._generation_config(m).timeout\n",
           "timeout = self.serving_config.timeout\n",
           (UNIT + "policy/test_pool.py::test_a_new_generation_boots_within_its_own_timeout",)),
    Mutant("backoff-linear", "sockact/policy/pool.py", "0.1 * 2 ** self.boot_failures", "0.2 * self.boot_failures",
           (UNIT + "policy/test_pool.py::test_the_respawn_backoff_doubles_up_to_its_cap",)),
    Mutant("stall-sticks", "sockact/policy/states.py", "(_W.STALLED, _WE.RESUME): _W.READY",
           "(_W.STALLED, _WE.RESUME): _W.STALLED",
           (UNIT + "policy/test_pool.py::test_a_stalled_worker_that_moves_again_gets_work_again",)),
    Mutant("stalled-keeps-parsed", "sockact/worker/owner.py",
           "HAND_BACK = frozenset({_C.PREFACE, _C.FRESH, _C.HEAD, _C.IDLE, _C.BODY, _C.QUEUED})",
           "HAND_BACK = frozenset({_C.PREFACE, _C.FRESH, _C.HEAD, _C.IDLE, _C.BODY})",
           (INTEG + "test_worker_loop.py::test_a_stalled_worker_hands_back_a_request_parsed_and_waiting",)),
    Mutant("refused-closed-at-once", "sockact/worker/wsgirunner.py",
           "held.linger_until = time.monotonic() + LINGER_SECONDS", "return self._close(held)",
           (INTEG + "test_hostile_clients.py::test_a_refused_request_is_answered_and_the_rest_of_its_input_dropped",)),
    Mutant("accept-ignores-budget", "sockact/supervisor/acceptor.py",
           "            if self.held >= self.budget:\n",
           "            if False:\n", (UNIT + "test_acceptor.py",)),
    Mutant("ipv6-peer-keeps-flowinfo", "sockact/supervisor/acceptor.py",
           "else addr[:2] if family == _INET6", "else addr if family == _INET6",
           (UNIT + "test_acceptor.py::test_an_ipv6_clients_peer_is_its_host_and_port_without_flowinfo_and_scope",)),
    Mutant("accepted-written-unknown", "sockact/supervisor/acceptor.py",
           "            conn.written = 0\n", "",
           (UNIT + "test_acceptor.py::test_a_batch_takes_every_waiting_client_until_eagain_with_ids_in_order_and_"
            "peers",)),
    Mutant("parked-closed-though-its-client-spoke", "sockact/supervisor/switchboard.py",
           "        if _readable(conn.fd):\n            self.route(conn)\n            return False\n",
           "        if False:\n            self.route(conn)\n            return False\n",
           (UNIT + "test_switchboard.py::test_making_room_serves_a_parked_client_that_spoke_and_closes_the_next_idle_"
                   "one",
            UNIT + "test_switchboard.py::test_a_parked_connection_whose_request_came_as_its_keepalive_ran_out_is_"
                   "served_not_closed",
            INTEG + "test_operator_traps.py::test_a_parked_client_whose_request_came_as_its_keepalive_ran_out_is_"
                    "served_not_reset")),
    Mutant("stop-loses-a-parked-one", "sockact/supervisor/store.py", "for conn in sup.parked.take_all():\n"
           "            sup.unregister(conn.fd)\n            self.store(conn)",
           "for conn in sup.parked.take_all()[1:]:\n            sup.unregister(conn.fd)\n"
           "            self.store(conn)",
           (INTEG + "test_store_handover.py::test_every_way_a_connection_waits_at_a_stop_is_stored",)),
    Mutant("head-error-has-body", "sockact/http/engine.py", '(b"" if head_only else body)', "body",
           (INTEG + "test_http_server.py::test_an_error_answer_to_head_has_no_body",)),
    Mutant("head-empty-is-length-0", "sockact/wsgi/server.py",
           'whole=None if request.method == b"HEAD" else 0', "whole=0",
           (INTEG + "test_http_server.py::test_a_head_whose_app_wrote_nothing_says_no_length",)),
    Mutant("body-buffer-ignores-buffered", "sockact/wsgi/server.py", "unread + engine.buffered >", "unread >",
           (INTEG + "test_http_server.py::test_body_buffer_counts_the_body_bytes_already_read",)),
    Mutant("close-environ-of-another-request", "sockact/wsgi/server.py", "last[0] is request and last[1] is site",
           "last[1] is site",
           (UNIT + "test_fast_path.py::test_a_close_request_after_another_head_or_a_cut_one_is_its_own",)),
    Mutant("close-environ-shares-its-part", "sockact/wsgi/server.py",
           "                env.update(part)\n                self._environ = env\n",
           "                part.update(env)\n                self._environ = part\n",
           (UNIT + "test_fast_path.py::test_each_close_client_sees_its_own_environ_though_the_head_repeats",)),
    Mutant("websocket-error-closes-1000", "sockact/asgi/websocket.py", "UNEXPECTED if failed else 1000",
           "1000",
           (INTEG + "test_asgi.py::test_an_app_error_on_an_accepted_websocket_closes_it_with_1011",)),
    Mutant("timeout-field-raw", "sockact/supervisor/core.py", "http_request=escape(view.line))",
           "http_request=view.line)",
           (INTEG + "test_logging.py::test_the_timeout_records_journal_field_is_escaped",)),
    Mutant("tally-retire-replaces", "sockact/ipc/tally.py",
           "self.retired = [a + b for a, b in zip(self.retired, self.read(slot, threads), strict=True)]",
           "self.retired = self.read(slot, threads)",
           (UNIT + "test_tally.py::test_each_retired_worker_adds_to_the_totals",)),
    Mutant("metrics-17-clients", "sockact/supervisor/metricserver.py", "MAX_CLIENTS = 16", "MAX_CLIENTS = 17",
           (INTEG + "test_metricserver.py::test_at_most_16_scrape_connections_are_held",)),
    Mutant("boolean-typo-is-false", "sockact/config/parsers.py",
           "if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:", "if isinstance(value, str):",
           (UNIT + "test_config.py::test_bad_files_name_the_key",)),
    Mutant("health-path-without-slash", "sockact/config/parsers.py", '(not value.startswith("/") or ', "(",
           (UNIT + "test_config.py::test_bad_files_name_the_key",)),
    Mutant("done-loses-an-id", "sockact/worker/channel.py", "range(0, len(ids), handoff.MAX_DONE)",
           "range(0, len(ids), handoff.MAX_DONE + 1)",
           (UNIT + "test_handoff.py::test_a_turn_that_closes_more_than_a_done_holds_reports_every_id",)),
    Mutant("outbox-overtaken", "sockact/supervisor/workers.py", "self.outbox.append(conn)\n",
           "self.outbox.appendleft(conn)\n",
           (UNIT + "test_outbox.py::test_a_new_connection_waits_behind_those_queued_for_room",)),
    # The code added with max_worker_memory, audited the same way.
    Mutant("memory-recycle-retires-at-once", "sockact/policy/pool.py", "if successor_first:", "if False:",
           (UNIT + "policy/test_pool.py::test_a_memory_recycle_starts_the_successor_first_then_retires_the_old_one",)),
    Mutant("memory-replaced-still-counted", "sockact/policy/pool.py",
           "m.generation == self.current.number and not m.replaced", "m.generation == self.current.number",
           (UNIT + "policy/test_pool.py::test_a_memory_recycle_starts_the_successor_first_then_retires_the_old_one",)),
    Mutant("memory-replaced-never-retired", "sockact/policy/pool.py",
           "old = [x for x in self.members.values() if x.replaced and x.state in LIVE] or self._old_members()",
           "old = self._old_members()",
           (UNIT + "policy/test_pool.py::test_a_memory_recycle_starts_the_successor_first_then_retires_the_old_one",)),
    Mutant("memory-uss-misses-dirty-pages", "sockact/supervisor/memory.py", 'b"Private_Clean:", b"Private_Dirty:", ',
           'b"Private_Clean:", ', (UNIT + "test_memory.py",)),
    Mutant("memory-rss-gate-inverted", "sockact/supervisor/memwatch.py", "and (memory.rss(w.pid) or 0) > limit)",
           "and (memory.rss(w.pid) or 0) < limit)",
           (INTEG + "test_memory_recycle.py",)),
    Mutant("memory-reason-lost", "sockact/supervisor/metrics.py",
           "        return recycled\n", '        return "max-requests"\n',
           (UNIT + "test_metrics_exposition.py::test_restart_reason",)),
    Mutant("memory-measures-rss", "sockact/supervisor/memwatch.py", "used = memory.uss(pid)", "used = memory.rss(pid)",
           (INTEG + "test_memory_recycle.py::test_pages_shared_with_a_preloaded_app_do_not_count_and_every_"
            "worker_is_looked_at",)),
    Mutant("size-units-decimal", "sockact/config/parsers.py",
           '"M": 1 << 20', '"M": 10 ** 6', (UNIT + "test_memory.py",)),
    Mutant("memory-check-on-old-pid-only", "sockact/supervisor/memwatch.py",
           "pid = next((p for p in over if p > self._last), over[0])", "pid = over[0]",
           (INTEG + "test_memory_recycle.py",)),
    # This round's code (the connection owner, growing threads, hooks, memory limits, the hostile-client
    # work), audited the same way.
    Mutant("conn-growing-head-restarts-clock", "sockact/worker/connstates.py",
           "KEEP_CLOCK = frozenset({(_C.FRESH, _C.HEAD), (_C.HEAD, _C.HEAD)})",
           "KEEP_CLOCK = frozenset({(_C.FRESH, _C.HEAD)})", (UNIT + "test_worker_states.py",)),
    Mutant("conn-call-handed-back", "sockact/worker/connstates.py",
           "for state in (_C.PREFACE, *_WAITING, _C.BODY, _C.QUEUED)}",
           "for state in (_C.PREFACE, *_WAITING, _C.BODY, _C.QUEUED, _C.CALL)}", (UNIT + "test_worker_states.py",)),
    Mutant("conn-body-deadline-is-header-timeout", "sockact/worker/owner.py",
           "Due.BODY_TIMEOUT if waited > conn.site.io_timeout", "Due.BODY_TIMEOUT if waited > conn.site.header_timeout",
           (UNIT + "test_worker_states.py",)),
    Mutant("conn-stopping-keeps-idle", "sockact/worker/owner.py",
           "waited > park_after or (stopping and conn.served > 0)", "waited > park_after",
           (UNIT + "test_worker_states.py",)),
    Mutant("conn-stall-keeps-a-body", "sockact/worker/owner.py",
           "HAND_BACK = frozenset({_C.PREFACE, _C.FRESH, _C.HEAD, _C.IDLE, _C.BODY, _C.QUEUED})",
           "HAND_BACK = frozenset({_C.PREFACE, _C.FRESH, _C.HEAD, _C.IDLE, _C.QUEUED})",
           (UNIT + "test_worker_states.py",)),
    Mutant("conn-stall-hands-back-unflushed", "sockact/worker/owner.py",
           "if conn.state in HAND_BACK and conn.flushed and", "if conn.state in HAND_BACK and",
           (UNIT + "test_worker_states.py",)),
    Mutant("conn-retire-parks-a-head", "sockact/worker/owner.py", "PARK_ON_RETIRE = frozenset({_C.FRESH, _C.IDLE})",
           "PARK_ON_RETIRE = frozenset({_C.FRESH, _C.HEAD, _C.IDLE})", (UNIT + "test_worker_states.py",)),
    Mutant("conn-handed-back-reported-done", "sockact/worker/owner.py", 'if event == "close":', 'if event != "park":',
           (UNIT + "test_worker_states.py",)),
    Mutant("conn-recycle-said-twice", "sockact/worker/owner.py",
           "self.requests >= self.max_requests and not self.recycling", "self.requests >= self.max_requests",
           (UNIT + "test_worker_states.py",)),
    Mutant("conn-handed-head-deadline-restarts", "sockact/worker/owner.py", "since = msg.head_started or now",
           "since = now", (UNIT + "test_worker_states.py",)),
    Mutant("conn-lost-fd-never-done", "sockact/worker/channel.py",
           "report(chan, handoff.done([lost.conn_id for lost in exc.messages]))\n            continue", "continue",
           (UNIT + "test_handoff.py",)),
    Mutant("threads-ceiling-one-short", "sockact/worker/appthreads.py", "if not self._free or self._stopping:",
           "if len(self._free) <= 1 or self._stopping:", (UNIT + "test_appthreads.py",)),
    Mutant("threads-floor-times-out", "sockact/worker/appthreads.py", "if len(self._threads) > self.floor:",
           "if len(self._threads) >= self.floor:", (UNIT + "test_appthreads.py",)),
    Mutant("threads-oldest-idle-woken", "sockact/worker/appthreads.py",
           "me = self._idle.pop()", "me = self._idle.pop(0)",
           (UNIT + "test_appthreads.py",)),
    Mutant("threads-highest-line-reused", "sockact/worker/appthreads.py",
           "self._free.append(me.line)\n                self._free.sort(reverse=True)",
           "self._free.append(me.line)\n                self._free.sort()", (UNIT + "test_appthreads.py",)),
    Mutant("threads-alive-line-kept", "sockact/worker/appthreads.py", "self._alive(me.line, False)",
           "self._alive(me.line, True)", (UNIT + "test_appthreads.py",)),
    Mutant("threads-pool-floor-not-started", "sockact/worker/wsgirunner.py", "floor - 1, thread_idle_timeout",
           "0, thread_idle_timeout",
           (INTEG + "test_app_threads.py::test_the_metrics_show_threads_in_use_and_the_ceiling[3]",)),
    Mutant("threads-pool-call-off-the-books", "sockact/worker/wsgirunner.py",
           "alive=self._thread_alive, assign=self._begin)", "alive=self._thread_alive)",
           (INTEG + "test_worker_death.py::test_a_request_read_but_not_begun_gets_a_502_not_silence",)),
    Mutant("handed-off-short-calls-unnoted", "sockact/worker/wsgirunner.py", "elif self._hand_off:", "elif False:",
           (INTEG + "test_app_threads.py::test_while_slow_calls_go_to_the_pool_a_path_whose_calls_are_all_short_"
            "stays_on_the_loop_thread",)),
    Mutant("threads-never-stalled-at-the-ceiling", "sockact/worker/wsgirunner.py", "if self.in_call < self.ceiling:",
           "if self.in_call <= self.ceiling:",
           (INTEG + "test_app_threads.py::test_at_the_ceiling_a_stalled_worker_still_hands_its_other_connections_"
            "back",)),
    Mutant("hook-post-fork-error-ignored", "sockact/worker/shell.py", 'self.hooks.call_or_raise("post_fork"',
           'self.hooks.call("post_fork"',
           (INTEG + "test_hooks.py::test_a_hook_that_raises_is_logged_and_post_fork_fails_the_worker",)),
    Mutant("hook-on-reload-sees-old-config", "sockact/supervisor/core.py",
           'self.hooks.call("on_reload", HookServer(os.getpid(), config))',
           'self.hooks.call("on_reload", HookServer(os.getpid(), self.config))',
           (INTEG + "test_hooks.py::test_each_hook_runs_in_its_process_at_its_moment[import-per-worker]",)),
    Mutant("hook-worker-server-pid-is-the-worker", "sockact/worker/shell.py", "HookServer(os.getppid(), self.config)",
           "HookServer(os.getpid(), self.config)",
           (INTEG + "test_hooks.py::test_each_hook_runs_in_its_process_at_its_moment[import-per-worker]",)),
    Mutant("hook-raise-escapes", "sockact/hooks.py", "        except (Exception, SystemExit):",
           "        except (ValueError, SystemExit):", (UNIT + "test_hooks_table.py",)),
    Mutant("hook-spec-unchecked", "sockact/hooks.py", "if not isinstance(spec, str) or not _SPEC_RE.match(spec):",
           "if not isinstance(spec, str):", (UNIT + "test_hooks_table.py",)),
    Mutant("cgroup-path-cut", "sockact/systemd/cgroups.py",
           "return line[3:]", "return line[2:]", (UNIT + "test_cgroups.py",)),
    Mutant("cgroup-root-taken", "sockact/systemd/cgroups.py",
           'if path == "/":', 'if path == "":', (UNIT + "test_cgroups.py",)),
    Mutant("cgroup-a-process-left-behind", "sockact/systemd/cgroups.py",
           'for pid in _read(service / "cgroup.procs").split():',
           'for pid in _read(service / "cgroup.procs").split()[1:]:', (UNIT + "test_cgroups.py",)),
    Mutant("cgroup-oom-group-off", "sockact/systemd/cgroups.py", '_write(group / "memory.oom.group", "1")',
           '_write(group / "memory.oom.group", "0")', (UNIT + "test_cgroups.py",)),
    Mutant("cgroup-no-limit-is-zero", "sockact/systemd/cgroups.py", 'str(limit) if limit else "max"', "str(limit)",
           (UNIT + "test_cgroups.py",)),
    Mutant("cgroup-old-oom-kills-count", "sockact/systemd/cgroups.py",
           "self._oom_kills(slot) > self._oom_before.get(slot, 0)", "self._oom_kills(slot) > 0",
           (UNIT + "test_cgroups.py",)),
    Mutant("cgroup-cpu-in-ms", "sockact/systemd/cgroups.py", '"usage_usec") / 1e6', '"usage_usec") / 1e3',
           (UNIT + "test_cgroups.py",)),
    Mutant("pressure-dev-null-watched", "sockact/systemd/pressure.py",
           'if not path or path == "/dev/null":', "if not path:",
           (UNIT + "test_pressure.py",)),
    Mutant("pressure-trigger-not-written", "sockact/systemd/pressure.py", "            if trigger:\n",
           "            if not trigger:\n", (UNIT + "test_pressure.py",)),
    Mutant("pressure-fifo-not-drained", "sockact/systemd/pressure.py", "if events and self._readable:",
           "if events and not self._readable:", (UNIT + "test_pressure.py",)),
    Mutant("pressure-hang-up-kept", "sockact/systemd/pressure.py", "self._epoll.unregister(self._fd)  #", "pass  #",
           (UNIT + "test_pressure.py",)),
    Mutant("pressure-recycles-the-smallest", "sockact/supervisor/memwatch.py", "largest = sup.workers[max(sizes,",
           "largest = sup.workers[min(sizes,",
           (INTEG + "test_memory_recycle.py::test_memory_pressure_collects_in_every_worker_and_recycles_the_largest_"
            "and_no_request_fails",)),
    Mutant("memory-rss-reads-vmsize", "sockact/supervisor/memory.py", "int(f.read().split()[1]) * _PAGE",
           "int(f.read().split()[0]) * _PAGE", (UNIT + "test_memory.py",)),
    Mutant("orphans-replays-bytes-it-sent", "sockact/supervisor/orphans.py",
           'elif call is None and conn.data.strip(b"\\r\\n"):', "elif False:", (UNIT + "test_orphans.py",)),
    Mutant("orphans-brought-bytes-unanswered-closed", "sockact/supervisor/orphans.py",
           'return Verdict(conn, BAD_GATEWAY, _request_line(conn.data))',
           'return Verdict(conn, None, _request_line(conn.data))', (UNIT + "test_orphans.py",)),
    Mutant("orphans-brought-bytes-answered-by-nothing", "sockact/supervisor/orphans.py",
           "return now > conn.written", "return now >= conn.written", (UNIT + "test_orphans.py",)),
    Mutant("orphans-answered-bytes-go-again", "sockact/supervisor/exits.py",
           "                if verdict.served:\n", "                if False:\n",
           (INTEG + "test_worker_death.py::test_a_request_after_one_a_hand_back_brought_goes_to_another_worker_"
            "when_the_worker_dies",)),
    Mutant("orphans-forgets-the-read", "sockact/supervisor/orphans.py",
           "BAD_GATEWAY if conn.id == reading and not again else None",
           "None", (UNIT + "test_orphans.py",)),
    Mutant("orphans-whole-response-cut", "sockact/supervisor/orphans.py",
           'call.answered or out_now == "whole"', "call.answered", (UNIT + "test_orphans.py",)),
    Mutant("asgi-written-before-unknown", "sockact/worker/asgirunner.py",
           "call.begin(scopes.line, conn.msg.conn_id, conn.written, now)",
           "call.begin(scopes.line, conn.msg.conn_id, 2**64 - 1, now)",  # scoreboard.UNKNOWN, as it was
           (INTEG + "test_worker_death.py::test_a_request_after_a_whole_asgi_response_goes_to_another_worker_when_"
            "the_worker_dies_in_the_call",)),
    Mutant("orphans-unreceived-closed", "sockact/supervisor/orphans.py",
           'out.append(Verdict(conn, None, "", again=True))',
           'out.append(Verdict(conn, None, ""))', (UNIT + "test_orphans.py",)),
    Mutant("orphans-504-for-the-young", "sockact/supervisor/orphans.py", "call.started < overdue_before",
           "call.started > overdue_before", (UNIT + "test_orphans.py",)),
    Mutant("orphans-idle-closed", "sockact/supervisor/orphans.py", 'out.append(Verdict(conn, None, "", park=True))',
           'out.append(Verdict(conn, None, ""))',
           (UNIT + "test_orphans.py",
            INTEG + "test_worker_death.py::test_an_idle_keep_alive_client_of_a_dead_worker_is_served_after")),
    Mutant("orphans-rest-ignores-the-kernel", "sockact/supervisor/orphans.py",
           "or conn.written < 0 or now != conn.written + mark.written:", "or conn.written < 0:",
           (UNIT + "test_orphans.py",)),
    Mutant("orphans-rest-of-a-closing-connection", "sockact/supervisor/orphans.py",
           "(established and info[0] != _ESTABLISHED)", "(established and False)", (UNIT + "test_orphans.py",)),
    Mutant("wsgi-head-in-part-unmarked", "sockact/worker/wsgirunner.py",
           "held.rest(held.http.wire.sent, in_head=True)", "pass",
           (INTEG + "test_worker_death.py::test_a_head_the_worker_held_in_part_when_it_died_gets_a_408",)),
    Mutant("wsgi-idle-after-an-inline-call-unmarked", "sockact/worker/wsgirunner.py",
           "elif held.state is IDLE:\n                        held.rest(held.http.wire.sent)",
           "elif False:\n                        pass",
           (INTEG + "test_worker_death.py::test_an_idle_keep_alive_client_of_a_dead_worker_is_served_after",)),
    Mutant("asgi-idle-unmarked", "sockact/worker/asgirunner.py", "if conn.state is IDLE or in_head:", "if in_head:",
           (INTEG + "test_worker_death.py::test_an_idle_keep_alive_client_of_a_dead_worker_is_served_after",)),
    Mutant("orphans-pipelined-request-gets-408", "sockact/supervisor/orphans.py",
           "BAD_GATEWAY if rest.read else REQUEST_TIMEOUT", "REQUEST_TIMEOUT", (UNIT + "test_orphans.py",)),
    Mutant("asgi-pipelined-unmarked", "sockact/asgi/cycle.py",
           "self.conn.read_behind()  # a pipelined request waits behind it, in memory", "pass",
           (INTEG + "test_worker_death.py::test_a_request_an_asgi_worker_read_behind_a_call_past_its_response_is_"
                    "not_dropped",)),
    Mutant("host-not-required", "sockact/http/engine.py",
           'if not rules.hosts and version == "1.1" and self.limits.host_required:', "if False:",
           (UNIT + "http/test_http_engine.py::test_a_listener_refuses_an_http_1_1_request_without_host",
            UNIT + "http/test_http_vectors.py::test_a_listener_refuses_the_valid_vectors_without_host")),
    Mutant("listener-host-not-required", "sockact/worker/shell.py", "body=lc.limit_request_body, host_required=True)",
           "body=lc.limit_request_body)",
           (INTEG + "test_hostile_clients.py::test_a_listener_answers_an_http_1_1_request_without_host_400",)),
    Mutant("heartbeat-ignores-calls", "sockact/ipc/scoreboard.py", "now - max(self.beat, self.newest) > timeout",
           "now - self.beat > timeout", (UNIT + "test_scoreboard.py",)),
    Mutant("heartbeat-booting-is-frozen", "sockact/ipc/scoreboard.py", "return bool(self.beat) and now -",
           "return now -", (UNIT + "test_scoreboard.py",)),
    Mutant("ws-fragments-escape-max-size", "sockact/asgi/websocket.py",
           "size = len(self._message) + len(event.data)", "size = len(event.data)",
           (INTEG + "test_asgi_limits.py::test_ws_max_size_is_a_setting",)),
    Mutant("ws-too-big-is-1011", "sockact/asgi/wsprotocols.py", "MESSAGE_TOO_BIG = 1009", "MESSAGE_TOO_BIG = 1011",
           (INTEG + "test_asgi_limits.py::test_a_message_over_ws_max_size_is_refused_with_1009",)),
    Mutant("ws-bad-frame-close-unanswered", "sockact/asgi/wsprotocols.py",
           "if self.ws.state in (ConnectionState.REMOTE_CLOSING, ConnectionState.OPEN):",
           "if self.ws.state in (ConnectionState.REMOTE_CLOSING,):", (UNIT + "test_wsprotocols.py",)),
    Mutant("wsgi-send-timeout-ignored", "sockact/wsgi/wire.py", "self.send_timeout = send_timeout or io_timeout",
           "self.send_timeout = io_timeout",
           (INTEG + "test_handback_and_send_deadlines.py::test_a_client_that_never_reads_is_dropped_after_send_"
            "timeout_and_the_worker_lives",)),
    Mutant("asgi-send-timeout-ignored", "sockact/asgi/conn.py",
           "timeout = self.site.send_timeout or self.site.io_timeout", "timeout = self.site.io_timeout",
           (INTEG + "test_asgi_limits.py::test_a_pipelining_client_that_never_reads_holds_one_response_and_is_"
            "let_go",)),
    Mutant("config-not-utf8-raises", "sockact/config/sources.py", "except UnicodeDecodeError as exc:",
           "except ZeroDivisionError as exc:",
           (UNIT + "test_config.py::test_a_file_not_in_utf8_or_not_a_file_is_one_line",
            INTEG + "test_reload_command.py::test_a_reload_that_finds_the_file_empty_or_the_app_gone_fails_and_the_"
            "app_serves_on")),
    Mutant("hup-unforeseen-error-kills-the-supervisor", "sockact/supervisor/core.py",
           "except Exception as exc:  # a settings source that fails", "except ZeroDivisionError as exc:  # a",
           (UNIT + "test_supervisor_signals.py::test_hup_whose_settings_fail_unforeseen_fails_the_reload_and_the_"
            "supervisor_lives_on",)),
    Mutant("wsgi-app-exit-ends-the-worker", "sockact/wsgi/server.py", "except APP_FAILURES as exc:",
           "except Exception as exc:",
           (INTEG + "test_app_that_exits.py::test_a_wsgi_call_that_exits_is_a_500_on_the_loop_thread_and_on_a_pool_"
            "thread",)),
    Mutant("app-own-base-exception-escapes", "sockact/errors.py", "= (BaseException,)",
           "= (Exception, SystemExit, KeyboardInterrupt)",
           (INTEG + "test_app_that_exits.py",)),
    Mutant("asgi-app-exit-ends-the-worker", "sockact/asgi/cycle.py", "= (*APP_FAILURES, asyncio.CancelledError)",
           "= (Exception, asyncio.CancelledError)",
           (INTEG + "test_app_that_exits.py::test_an_asgi_call_or_session_that_exits_ends_it_alone",)),
    Mutant("boot-timeout-killed-blind", "sockact/policy/pool.py",
           "actions.append(Kill(m.pid, signal.SIGABRT))", "actions.append(Kill(m.pid, signal.SIGKILL))",
           (UNIT + "policy/test_pool.py::test_a_boot_past_timeout_is_killed_and_the_reload_abandoned",
            INTEG + "test_pool_process.py::test_a_boot_past_timeout_is_killed_and_the_old_generation_serves")),
    Mutant("seconds-unbounded", "sockact/config/parsers.py", "if value > MAX_SECONDS:", "if False:",
           (UNIT + "test_config.py::test_bad_files_name_the_key",)),
    Mutant("backlog-unbounded", "sockact/config/settings.py", "parsers.integer(1, 2**31 - 1), 1024",
           "parsers.integer(1), 1024", (UNIT + "test_config.py::test_bad_files_name_the_key",)),
    Mutant("reload-pid-error-names-a-function", "sockact/reloadctl.py", "    except ValueError:  # else argparse names",
           "    except ZeroDivisionError:  # else argparse names",
           (UNIT + "test_reloadctl.py::test_a_pid_that_would_signal_others_is_refused",)),
    Mutant("reload-changed-hooks-unsaid", "sockact/config/settings.py",
           '"hooks", metavar="TABLE", cli=False, restart=True)', '"hooks", metavar="TABLE", cli=False)',
           (UNIT + "test_supervisor_signals.py::test_hup_with_changed_hooks_says_they_wait_for_a_restart",)),
    Mutant("nul-in-a-path-setting-passes", "sockact/config/parsers.py", 'if "\\0" in value:', "if False:",
           (UNIT + "test_config.py::test_bad_files_name_the_key",)),
    # A new connection's access line taken from the last one another connection kept.
    Mutant("shared-line-any-client", "sockact/logs/access.py", "and last[2] == remote and", "and",
           (UNIT + "test_accesslog.py::test_a_new_connections_line_is_the_last_one_kept_only_when_nothing_in_it_"
            "differs",)),
    Mutant("shared-line-any-request", "sockact/logs/access.py", "last[0] is key and ", "",
           (UNIT + "test_accesslog.py::test_a_new_connections_line_is_the_last_one_kept_only_when_nothing_in_it_"
            "differs",)),
    Mutant("shared-line-names-the-connection", "sockact/logs/access.py",
           "self._shared = self.sendv is None and _PER_CONNECTION.isdisjoint", "self._shared = self.sendv is None or "
           "_PER_CONNECTION.isdisjoint",
           (UNIT + "test_accesslog.py::test_a_new_connections_line_is_the_last_one_kept_only_when_nothing_in_it_"
            "differs",)),
    # A new connection's engine starts from the last answer any connection kept.
    Mutant("last-whole-any-version", "sockact/http/engine.py",
           "(last[1].method == request.method and last[1].version == request.version",
           "(last[1].method == request.method",
           (UNIT + "test_fast_path.py::test_a_new_connection_answers_from_the_last_kept_answer_only_when_it_is_"
            "the_same_answer",)),
    Mutant("last-whole-any-keep-alive", "sockact/http/engine.py",
           "                                            and last[1].keep_alive == request.keep_alive))",
           "                                            ))",
           (UNIT + "test_fast_path.py::test_a_new_connection_answers_from_the_last_kept_answer_only_when_it_is_"
            "the_same_answer",)),
    Mutant("trusted-client-only-with-an-entry", "sockact/wsgi/server.py",
           "            if self.trust is not None:  # a trusted proxy's",
           "            if self.trust is not None and self.log_entry is not None:  # a trusted proxy's",
           (UNIT + "test_fast_path.py::test_a_close_clients_line_given_again_is_the_line_its_own_entry_makes",)),
    Mutant("shared-line-any-status", "sockact/logs/access.py", "and last[5] == status", "",
           (UNIT + "test_accesslog.py::test_a_new_connections_line_is_the_last_one_kept_only_when_nothing_in_it_"
            "differs",)),
    Mutant("asgi-log-connection-client", "sockact/worker/asgirunner.py",
           'conn.remote if conn.remote and client is conn.scope["client"]\n', "conn.remote if conn.remote\n",
           (INTEG + "test_asgi_proxy.py::test_the_access_log_names_each_requests_client_on_one_connection",)),
    Mutant("asgi-whole-takes-the-body-as-read", "sockact/asgi/cycle.py",
           "        if self.engine.keep_alive and (self.body_done or self.engine.body_done()):\n            # Kept",
           "        self.body_done = True\n        if self.engine.keep_alive and (self.body_done or "
           "self.engine.body_done()):\n            # Kept",
           (INTEG + "test_asgi.py::test_a_body_the_app_never_reads_is_dropped_and_the_next_request_is_served",)),
    Mutant("asgi-scope-shares-asgi", "sockact/asgi/scope.py",
           'scope["extensions"] = base["extensions"].copy()\n        scope["asgi"] = base["asgi"].copy()',
           'scope["extensions"] = base["extensions"].copy()\n        scope["asgi"] = base["asgi"]',
           (INTEG + "test_asgi.py::test_what_an_app_adds_to_a_scope_stays_out_of_the_next_requests_scope",)),
    Mutant("asgi-date-kept-past-its-second", "sockact/asgi/cycle.py",
           "(d := DATE.last[0])[0] <= time.time() < d[1]", "(d := DATE.last[0])[1]",
           (INTEG + "test_response_fields.py::test_the_date_is_the_seconds_on_one_connection",)),
    Mutant("asgi-call-line-kept", "sockact/worker/asgirunner.py",
           "line.clear()\n                self.call_lines.append(line)", "line.clear()",
           (INTEG + "test_asgi.py::test_a_killed_worker_answers_a_call_after_many_with_a_502",)),
    Mutant("asgi-no-spare-lines", "sockact/worker/asgirunner.py", "if lines or self._more_lines():", "if lines:",
           (INTEG + HUNDRED_CALLS_TEST,)),
    Mutant("spare-lines-unread", "sockact/ipc/scoreboard.py",
           "min(max(made.words[_MADE_AT // _WORD], MAX_THREADS), self.lines)", "MAX_THREADS",
           (INTEG + HUNDRED_CALLS_TEST,)),
    Mutant("spare-lines-uncounted", "sockact/ipc/scoreboard.py", "self._words[_MADE_AT // _WORD] = self.made", "pass",
           (INTEG + HUNDRED_CALLS_TEST,)),
    Mutant("asgi-log-entry-kept", "sockact/worker/asgirunner.py", "if memo is None or memo.key is not request:",
           "if memo is None:",
           (INTEG + "test_asgi_proxy.py::test_the_access_log_names_each_requests_client_on_one_connection",)),
    Mutant("bench-paired-order-never-flipped", "bench/paired.py",
           "return list(sides) if n % 2 == 0 else list(reversed(sides))", "return list(sides)",
           (UNIT + "test_bench_paired.py::test_paired_rounds_alternate_and_flip_the_order_each_round",)),
    Mutant("bench-paired-ratio-inverted", "bench/report.py",
           '"ratio": ratio(of(other, "req_s"), of(base, "req_s"))',
           '"ratio": ratio(of(base, "req_s"), of(other, "req_s"))',
           (UNIT + "test_bench_report.py::test_paired_rounds_are_reduced_to_medians_each_run_and_the_ratio_round_"
            "by_round",
            UNIT + "test_bench_report.py::test_a_loss_above_three_percent_on_the_paired_medians_is_not_met")),
    Mutant("bench-growing-tie-counted-as-met", "bench/report.py",
           "throughput table: {matrix})\", times >= 1.0)",
           "throughput table: {matrix})\", low_high is not None and low_high[1] >= 1.0)",
           (UNIT + "test_bench_report.py::test_a_tie_with_granian_within_the_rounds_spread_is_named_and_judged_on_the_"
            "medians_alone",)),
    Mutant("spool-never", "sockact/worker/wsgirunner.py",
           "if (step.content_length or step.chunked) and held.http.body_to_spool():",
           "if False and held.http.body_to_spool():",
           (INTEG + "test_body_spool.py::test_four_slow_uploaders_do_not_stop_service",)),
    Mutant("spool-chunked-never", "sockact/wsgi/server.py",
           "        if request.chunked:\n            return True\n        return bool(self.engine.unread_body)",
           "        if request.chunked:\n            return False\n        return bool(self.engine.unread_body)",
           (INTEG + "test_body_spool.py::test_four_slow_uploaders_do_not_stop_service",)),
    Mutant("spool-past-its-bound", "sockact/wsgi/server.py", "if size > limit or (size", "if (size",
           (INTEG + "test_body_spool.py::test_a_chunked_body_past_the_spool_bound_is_read_on_by_the_app"
            "[--body-spool]",)),
    Mutant("spool-total-not-taken", "sockact/wsgi/server.py", "budget.take(need)", "budget.give(0)",
           (INTEG + SPOOL_TOTAL_TEST,)),
    Mutant("spool-total-not-grown", "sockact/wsgi/server.py", "not self._spool_more(budget, size)", "False",
           (INTEG + "test_body_spool.py::test_a_chunked_body_past_the_spool_bound_is_read_on_by_the_app"
            "[--body-spool-total]",)),
    Mutant("spool-total-not-given-back", "sockact/wsgi/server.py", "self.site.spool_budget.give(spooled)", "pass",
           (INTEG + SPOOL_TOTAL_TEST,)),
    Mutant("spool-total-kept-on-a-close", "sockact/wsgi/server.py",
           "if self.spool is not None:\n            self.drop_spool()  # left while",
           "if False:\n            self.drop_spool()  # left while",
           (INTEG + SPOOL_TOTAL_TEST,)),
    Mutant("spool-handed-back-without-its-body", "sockact/worker/wsgirunner.py",
           "return self.http.spool is None  # a body", "return True  # a body",
           (UNIT + "test_worker_states.py",
            INTEG + "test_body_spool.py::test_a_spooled_body_stays_with_a_stalled_worker")),
    Mutant("spool-stall-ignores-movable", "sockact/worker/owner.py", "conn.flushed and conn.movable:",
           "conn.flushed:", (UNIT + "test_worker_states.py::test_a_stall_keeps_a_connection_whose_body_is_in_a_file",)),
    Mutant("spool-file-kept-after-the-call", "sockact/wsgi/server.py",
           "            if self.spool is not None:\n                self.drop_spool()  # its disk space",
           "            if False:\n                self.drop_spool()  # its disk space",
           (INTEG + "test_body_spool.py::test_a_spooled_bodys_file_is_gone_after_the_request",)),
    Mutant("body-deadline-without-grace", "sockact/worker/wsgirunner.py",
           "held.since += len(data) / BODY_MIN_RATE", "held.since += 0",
           (INTEG + "test_body_spool.py::test_a_large_body_at_a_real_clients_pace_is_not_cut_by_the_deadline",)),
    Mutant("spool-not-read-back", "sockact/wsgi/server.py",
           "InputStream(self.pull_body if self.spool is None else self._pull_spooled)", "InputStream(self.pull_body)",
           (INTEG + "test_body_spool.py::test_a_spooled_body_reaches_the_app_byte_exact",)),
    Mutant("spool-not-rewound", "sockact/wsgi/server.py",
           "                if event is NEED_DATA:\n                    return False\n                spool.seek(0)",
           "                if event is NEED_DATA:\n                    return False",
           (INTEG + "test_body_spool.py::test_a_spooled_body_reaches_the_app_byte_exact",)),
    Mutant("spool-broken-body-goes-to-the-app", "sockact/worker/wsgirunner.py",
           " http.refuse(exc, linger=False)", " http.refuse(ProtocolError(400, 'cut'), linger=False)",
           (INTEG + "test_body_spool.py::test_a_chunked_body_over_the_request_limit_is_refused_by_the_loop",)),
    Mutant("wsgi-close-before-the-end-of-the-body", "sockact/wsgi/server.py",
           "self._send_result(result, request)\n            if not start.headers_sent:",
           "self._send_result(result, request)\n            close_iterable(result)\n"
           "            if not start.headers_sent:",
           (INTEG + "test_app_response_misbehaviour.py::test_a_close_that_raises_after_the_body_leaves_the_response_"
            "whole_and_closes",)),
    Mutant("wsgi-kept-write-reaches-the-next-response", "sockact/wsgi/server.py",
           "start.write = ended  # the write() it returned", "start.write = start.write  # the write() it returned",
           (INTEG + "test_app_response_misbehaviour.py::test_a_write_kept_past_its_response_writes_nothing_into_"
            "the_next_one",)),
    Mutant("ws-close-code-unchecked", "sockact/asgi/websocket.py",
           "if type(code) is not int or not (code in SENDABLE_CODES or 3000 <= code < 5000):", "if False:",
           WS_MISTAKES_TEST),
    Mutant("ws-close-reason-unchecked", "sockact/asgi/websocket.py", "if not 0 <= size <= MAX_REASON:", "if False:",
           WS_MISTAKES_TEST),
    Mutant("ws-text-of-anything-sent", "sockact/asgi/websocket.py", "if type(data) is not str:  # str() of it",
           "if False:  # str() of it",
           WS_MISTAKES_TEST),
    Mutant("body-past-its-length-unsaid", "sockact/http/engine.py", "self.dropped += len(data) - room",
           "self.dropped += 0", (INTEG + "test_short_responses.py",)),
    Mutant("asgi-long-poll-return-an-error", "sockact/asgi/cycle.py",
           "said = log.info if conn.eof or self.client_left else log.error", "said = log.error",
           (INTEG + "test_app_response_misbehaviour.py::test_an_asgi_app_that_returns_without_a_response_is_an_error_"
            "unless_its_client_left",)),
    Mutant("pathsend-of-any-kind-of-file", "sockact/asgi/cycle.py", "if not stat.S_ISREG(st.st_mode):", "if False:",
           PATHSEND_TEST),
    Mutant("pathsend-open-blocks-the-loop", "sockact/asgi/cycle.py", "os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC",
           "os.O_RDONLY | os.O_CLOEXEC",
           PATHSEND_TEST),
    Mutant("reload-start-only-setting-unmarked", "sockact/config/settings.py", 'metavar="LEVEL", restart=True)',
           'metavar="LEVEL")', (INTEG + "test_reload_command.py::" + RELOAD_NAMES,)),
    Mutant("reload-start-only-against-the-last-reload", "sockact/supervisor/core.py",
           "unapplied(self.started, config, activated)", "unapplied(self.config, config, activated)",
           (INTEG + "test_reload_command.py::" + RELOAD_NAMES,)),
    Mutant("reload-bind-named-under-activation", "sockact/config/sources.py",
           "and not (activated and s.name in BIND_SETTINGS)", "and True",
           (INTEG + "test_reload_command.py::" + RELOAD_NAMES,)),
    Mutant("reload-start-only-untold-to-the-command", "sockact/supervisor/core.py",
           "reload_finished(True, self.reload_note)", 'reload_finished(True, "")',
           (INTEG + "test_reload_command.py::" + RELOAD_NAMES,)),
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
                                 *mutant.tests], cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return "caught", f"E   the tests hung: no answer in {TIMEOUT}s"
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

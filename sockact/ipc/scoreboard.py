"""Shared-memory scoreboard: what each worker's app threads are doing, readable without a syscall.

Each worker owns one slot, an anonymous MAP_SHARED mapping the supervisor makes before the
worker's fork, and each of its app threads one line of that slot (an ASGI worker: its loop one
line, and each HTTP call in progress one of the others, worker/asgirunner.py, made as its calls at
once grow: ``SpareLines``). A slot's size is virtual until a line is written: the kernel gives a
page when it is first touched, so a slot with a line for each connection a worker may hold costs
what its busiest moment wrote. A thread stamps its line when an app
call starts (with the request line and the connection), when its response begins, and when
it ends (counting the request). Writes are plain memory stores: no message, no wakeup. From
the stamps the supervisor tells

- a worker that is moving from one whose every app thread has sat in one call longer
  than handback_after (stalled: it gets no new connections),
- a call stuck past timeout (the worker is aborted, and the log names the request), and
- when a worker has died, which of its clients can still get a clean 502 or 504 (no byte
  of their response went out) and which must see the connection close; a WSGI worker also
  names, on its lines past its app threads', the requests it has read that wait for an app
  thread (``Waiting``): lost with the worker, they get a 502 rather than a silent close, and
- a worker frozen outside any call (stopped, or its loop blocked): each slot starts with a
  heartbeat that the worker's loop stamps as it turns, at least every hundredth of a second
  (``SlotWriter.beat``), and one that has
  not moved for timeout, with no call started since, is killed like a stuck call; and
- when a worker has died, which connections sent to it it never even received: the slot's head
  also counts the messages the worker took from its channel (``SlotWriter.received``), in the
  order the supervisor sent them; and
- which connection a WSGI worker's loop was reading when it died, before the request it read
  reached a line (``SlotWriter.reading``): stamped before each read, and cleared once what it read
  is on a line, answered, or nothing to answer (a call on the loop's thread clears it as it ends,
  just before the call's own start); and
- which connections were idle at a request boundary when a worker died, every byte read answered
  (written by the connection itself, ``worker.owner.Owned.rest``, at the place ``SlotWriter.mark_of``
  gives), which held only part of a head, nothing else unanswered (``in_head``), and
  which had read more of the next request than its head's start behind a call's whole response (``read``):
  the slot ends with a table of such marks, one per connection, each with the bytes the worker had
  written on it by then, so that the kernel's count can tell its last response went out whole. A mark
  is wiped before the worker reads its connection again, when a head it held in part is
  whole, and when the worker adopts a connection (a mark left by an earlier stay says nothing of this one).

Each line has one writer, so nothing is locked. Torn reads are possible and harmless:
these are hints for timers, not transactions.
"""

from __future__ import annotations

import mmap
import struct
import time
from dataclasses import dataclass

MAX_THREADS = 64  # app threads per worker that the scoreboard can follow: the bound of threads and max_threads
# Workers of one generation, the bound of workers: a reload runs two generations side by side, and the
# supervisor follows twice as many at once (its SCOREBOARD_SLOTS).
MAX_WORKERS = 512
# started (monotonic seconds, 0.0 when not in a call), requests finished, request line length,
# the connection in the call, whether its response has begun (a byte of it was handed to the kernel),
# then, once it has: the bytes the worker had written on the connection before it, and its length
# when it went in one send (0: not known). Each 8 bytes at an 8-byte offset (see _WORD).
_LINE = struct.Struct("=dQQQQQQ")
_REQUESTS_AT, _LENGTH_AT, _CONN_AT, _RESPONDED_AT = 8, 16, 24, 32
_RESPONSE = struct.Struct("=QQQ")
# A call's fields before its start, one pack for a begin that knows its bytes written: the connection, then
# _RESPONSE's (not begun, the bytes before, its length not known yet).
_CALL = struct.Struct("=QQQQ")
ANSWERED = 2  # the line's responded field: 0 no byte sent, 1 the response begun, ANSWERED it is whole
UNKNOWN = 2**64 - 1  # the bytes written before the response: not counted
LINE_SIZE = 168
_ALIVE_AT = LINE_SIZE - 1  # the line's last byte: 1 while a WSGI app thread owns the line (threads come and go)
_LINE_MAX = _ALIVE_AT - _LINE.size  # the request line's bytes, after the fields
_STARTED = struct.Struct("=d")
_HEAD = 64  # a slot's first bytes: the loop's heartbeat, messages received, the read under way, the lines made
_RECEIVED = struct.Struct("=Q")
_RECEIVED_AT = _STARTED.size
_READING = struct.Struct("=Q")  # the connection the loop is reading (0: none)
_READING_AT = _RECEIVED_AT + _RECEIVED.size
# The lines an ASGI worker has made past the first MAX_THREADS (SpareLines), counted from the first: a dead
# worker's lines up to there are read (0: MAX_THREADS), the rest never written.
_MADE_AT = _READING_AT + _READING.size
# The table of idle marks after a slot's head, before its lines: a connection's mark is at its id modulo the
# table's size, two words (its id, then the bytes written on it, with IN_HEAD set for a head held in part,
# READ for a request read, perhaps whole, behind a whole response); a mark another connection takes over is
# lost, and that client is closed as before. 256 idle clients in a worker at once, with park_after at 0.1 s,
# is a busy worker.
IDLE_MARKS = 256
IN_HEAD = 1 << 63
READ = 1 << 62
_COUNT = READ - 1
_MARKS_AT = _HEAD
_LINES_AT = _MARKS_AT + IDLE_MARKS * 16
# The stamps a request makes store 8-byte fields at 8-byte offsets one item at a time, through a memoryview
# of the mapping as words: a third of what a struct's pack_into of one item costs (its arguments are parsed
# anew on every call), and a call's start stores three or four of them where a pack of all its fields
# cost as much as seven.
_WORD = 8
assert _LINES_AT % _WORD == 0 and LINE_SIZE % _WORD == 0 and _HEAD % _WORD == 0


@dataclass(frozen=True, slots=True)
class SlotView:
    """A worker's slot, summed over its threads."""

    requests: int  # requests finished
    busy: int  # threads inside an app call
    threads: int  # WSGI app threads alive (an ASGI worker's lines are its loop's and calls': 0)
    threads_busy: int  # of those, the ones inside an app call
    oldest: float  # start of the longest-running call (0.0: none)
    newest: float  # start of the most recent call still running (0.0: none)
    line: str  # the request line of the longest-running call
    beat: float = 0.0  # the loop's last heartbeat (0.0: none yet, the worker is booting)

    def stalled(self, threads: int, now: float, after: float) -> bool:
        """Every app thread has been in one call for longer than ``after``."""
        return self.busy >= threads and now - self.newest > after

    def stuck(self, now: float, timeout: float) -> bool:
        """A call has run longer than ``timeout``."""
        return bool(self.oldest) and now - self.oldest > timeout

    def frozen(self, now: float, timeout: float) -> bool:
        """The loop has not beaten for ``timeout``, nor has a call started since: stopped, or blocked
        outside a call. (A call that runs on the loop's thread stops the beat; its own timeout counts.)"""
        return bool(self.beat) and now - max(self.beat, self.newest) > timeout


@dataclass(frozen=True, slots=True)
class Call:
    """One app call in progress: on which connection, for which request, and whether it has answered."""

    conn_id: int
    line: str
    responded: bool
    started: float  # monotonic seconds
    answered: bool = False  # the response is whole and the connection persists: the client is idle
    written_before: int | None = None  # bytes the worker wrote on the connection before the response
    length: int = 0  # the response's bytes, when it went in one send (0: not known)


@dataclass(frozen=True, slots=True)
class Rest:
    """A connection a worker marked at a request boundary (worker.owner.Owned.rest)."""

    written: int  # the bytes the worker had written on it by then
    in_head: bool  # part of the next head was read since, no more
    read: bool = False  # the next head was read whole since (a pipelined request), and no call has begun


class _Slot:
    """One worker's slot: its mapping, and the same bytes as words and as doubles."""

    __slots__ = ("floats", "map", "words")

    def __init__(self, size: int) -> None:
        self.map = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
        self.words = memoryview(self.map).cast("Q")  # unsigned 8-byte words
        self.floats = memoryview(self.map).cast("d")

    def close(self) -> None:
        self.words.release()
        self.floats.release()
        self.map.close()


class Scoreboard:
    """``slots`` slots of ``lines`` lines each. A slot's mapping is made anew as it is allocated, before the
    fork of its worker, which inherits it: zeroed by the kernel, and nothing of it touched here until read."""

    def __init__(self, slots: int, lines: int = MAX_THREADS) -> None:
        self.slots = slots
        self.lines = max(lines, MAX_THREADS)
        self.slot_size = _LINES_AT + self.lines * LINE_SIZE
        self._free = list(range(slots - 1, -1, -1))
        self._slots: list[_Slot | None] = [None] * slots

    def _slot(self, slot: int) -> _Slot:
        made = self._slots[slot]
        if made is None:
            made = self._slots[slot] = _Slot(self.slot_size)
        return made

    # -- supervisor side

    def allocate(self) -> int:
        """A free slot for a new worker; raises IndexError when all are taken."""
        slot = self._free.pop()
        # Its last worker's mapping goes once nothing refers to it (a worker forked meanwhile keeps its copy).
        self._slots[slot] = _Slot(self.slot_size)
        return slot

    def received(self, slot: int) -> int:
        """How many messages the worker in ``slot`` has taken from its channel."""
        return int(_RECEIVED.unpack_from(self._slot(slot).map, _RECEIVED_AT)[0])

    def reading(self, slot: int) -> int:
        """The connection the worker in ``slot`` was reading when it stopped, what it read on no line
        yet; 0 when none."""
        return int(_READING.unpack_from(self._slot(slot).map, _READING_AT)[0])

    def resting(self, slot: int) -> dict[int, Rest]:
        """The connections the worker in ``slot`` marked idle at a request boundary, or holding a head in part."""
        words = self._slot(slot).words
        base = _MARKS_AT // _WORD
        return {words[at]: Rest(words[at + 1] & _COUNT, bool(words[at + 1] & IN_HEAD), bool(words[at + 1] & READ))
                for at in range(base, base + 2 * IDLE_MARKS, 2) if words[at]}

    def release(self, slot: int) -> None:
        self._free.append(slot)

    def read(self, slot: int, threads: int) -> SlotView:
        requests = busy = alive = alive_busy = 0
        oldest = newest = 0.0
        oldest_at = -1
        mapping = self._slot(slot).map
        beat = _STARTED.unpack_from(mapping, 0)[0]
        base = _LINES_AT
        for i in range(min(threads, MAX_THREADS)):
            started, count, *_ = _LINE.unpack_from(mapping, base + i * LINE_SIZE)
            requests += count
            live = mapping[base + i * LINE_SIZE + _ALIVE_AT]
            alive += live
            if started:
                busy += 1
                alive_busy += live
                if not oldest or started < oldest:
                    oldest, oldest_at = started, i
                newest = max(newest, started)
        line = ""
        if oldest_at >= 0:
            at = base + oldest_at * LINE_SIZE
            length = min(_LINE.unpack_from(mapping, at)[2], _LINE_MAX)
            line = mapping[at + _LINE.size:at + _LINE.size + length].decode("latin-1")
        return SlotView(requests, busy, alive, alive_busy, oldest, newest, line, beat)

    def calls(self, slot: int) -> list[Call]:
        """The calls in progress in a worker's slot: read when the worker has died, to answer its clients.
        Every line written is read: an ASGI worker keeps a line per HTTP call beyond its loop's
        (worker/asgirunner.py), past the first MAX_THREADS as many as its head counts (SpareLines)."""
        calls = []
        made = self._slot(slot)
        mapping, lines = made.map, min(max(made.words[_MADE_AT // _WORD], MAX_THREADS), self.lines)
        for i in range(lines):
            at = _LINES_AT + i * LINE_SIZE
            started, _, length, conn_id, responded, before, size = _LINE.unpack_from(mapping, at)
            if started:
                line = mapping[at + _LINE.size:at + _LINE.size + min(length, _LINE_MAX)].decode("latin-1")
                calls.append(Call(conn_id, line, bool(responded), started, responded == ANSWERED,
                                  None if before == UNKNOWN else before, size))
        return calls

    # -- worker side

    def writer(self, slot: int, thread: int) -> SlotWriter:
        made = self._slot(slot)
        return SlotWriter(made.map, _LINES_AT + min(thread, self.lines - 1) * LINE_SIZE, 0, made.words, made.floats)

    def close(self) -> None:
        for made in self._slots:
            if made is not None:
                made.close()
        self._slots = [None] * self.slots


class SlotWriter:
    """One app thread's line: ``begin`` when a call starts, ``end`` when it ends; and its worker's
    heartbeat, which any of the worker's writers can stamp (the loop's own does)."""

    __slots__ = ("_at", "_beat_at", "_conn_word", "_floats", "_length_word", "_map", "_marks_word", "_reading_word",
                 "_requests_word", "_responded_word", "_started_word", "_text", "_words", "_written", "clears_reading",
                 "requests")

    def __init__(self, mapping: mmap.mmap, at: int, beat_at: int, words: memoryview, floats: memoryview[float]) -> None:
        self._map = mapping
        self._at = at
        self._beat_at = beat_at
        self._words, self._floats = words, floats  # the slot's mapping as words and doubles (_Slot's)
        self._started_word = at // _WORD
        self._requests_word = (at + _REQUESTS_AT) // _WORD
        self._length_word = (at + _LENGTH_AT) // _WORD
        self._conn_word = (at + _CONN_AT) // _WORD
        self._responded_word = (at + _RESPONDED_AT) // _WORD
        self._reading_word = (beat_at + _READING_AT) // _WORD
        self._marks_word = (beat_at + _MARKS_AT) // _WORD
        self._text: bytes | None = None  # the request line written last on this line (its only writer)
        # The bytes written before the response that the line holds, as read now, against which ``whole`` counts
        # the response's length. (Not the connection's: a line serves another client's call as often as not.)
        self._written = words[self._responded_word + 1]
        self.requests = 0
        # The first line of a worker whose loop thread runs calls itself: its end() clears the stamp of
        # the read (``reading``) too, since the call served what that read brought.
        self.clears_reading = False

    def beat(self) -> None:
        """The worker's loop is turning: stamp its heartbeat now."""
        self._floats[self._beat_at // _WORD] = time.monotonic()

    def received(self, count: int) -> None:
        """The worker has taken ``count`` messages from its channel (handoff.Receiver counts them)."""
        self._words[(self._beat_at + _RECEIVED_AT) // _WORD] = count

    def reading_stamp(self) -> tuple[memoryview, int]:
        """Where ``reading`` writes: (the words, the index), for a loop that stamps every read without a call."""
        return self._words, self._reading_word

    def reading(self, conn_id: int) -> None:
        """The worker's loop is about to read ``conn_id`` (0: what it read is accounted for): if it dies
        before what it reads is on a line, its client gets a 502."""
        self._words[self._reading_word] = conn_id

    def mark_of(self, conn_id: int) -> tuple[memoryview, int]:
        """Where ``conn_id``'s idle mark is: (the words, the index of its id; the bytes written, with IN_HEAD
        and READ, follow it). The connection writes it itself at each request boundary (worker.owner.Owned.rest,
        its id last: the mark is whole from there), and wipes it (its id 0) before each read and at adoption."""
        return self._words, self._marks_word + 2 * (conn_id % IDLE_MARKS)

    def begin(self, line: bytes, conn_id: int = 0, written: int | None = None, now: float = 0.0) -> None:
        """A call starts (``now``, monotonic, when the caller has read the clock); ``line`` names its request
        (read back as latin-1, cut to fit). ``written``: the bytes written on the connection before the call,
        for one whose response will begin with ``responded_uncounted`` and end with ``whole`` (an ASGI
        call's: nothing else writes on its connection meanwhile); without it, the response begins with
        ``responded``, which writes those fields itself (nothing reads them before)."""
        words = self._words
        if line != self._text:  # else the last call's request line, there already (a client repeats its request)
            self._text = line
            line = line[:_LINE_MAX]
            text_at = self._at + _LINE.size
            self._map[text_at:text_at + len(line)] = line
            words[self._length_word] = len(line)
        if written is None:
            words[self._conn_word] = conn_id
            words[self._responded_word] = 0
        else:
            # One pack rather than a store each: an ASGI call begins with each request (callgrind, Python 3.11).
            _CALL.pack_into(self._map, self._at + _CONN_AT, conn_id, 0, written, 0)
            self._written = written
        # Last: from here the line shows a call, and the fields above are already this call's.
        self._floats[self._started_word] = now or time.monotonic()

    def responded(self, written: int = UNKNOWN, length: int = 0) -> None:
        """The call's response is about to begin: from now on only closing the connection tells the truth,
        unless the kernel's count of bytes written on it says otherwise (``written``: by this worker
        before the response; ``length``: the response's, when it goes in one send)."""
        _RESPONSE.pack_into(self._map, self._at + _RESPONDED_AT, 1, written, length)
        self._written = written

    def responded_uncounted(self) -> None:
        """``responded()`` for a line begun with ``written=UNKNOWN``: the one field that changes, rather than a
        struct packed for each response."""
        self._words[self._responded_word] = 1

    def whole(self, written: int) -> None:
        """The last byte of a response begun with ``responded_uncounted`` is written on a connection that
        persists, ``written`` bytes written on it in all by then: the response's length, against the count
        ``begin`` took, lets the kernel's count tell a whole response from a cut one (it may still wait in
        the worker's buffers)."""
        # Modulo 2**64: a line begun with UNKNOWN stays unknown (the supervisor reads no length without the
        # count before), where a negative length would raise in the app's send.
        self._words[self._responded_word + 2] = (written - self._written) & 0xFFFF_FFFF_FFFF_FFFF

    def answered(self) -> None:
        """The call's response is whole and its connection persists: what the call does after (the app's
        close(), the access line) concerns the client no more, which is idle from now on."""
        self._words[self._responded_word] = ANSWERED

    def end(self) -> None:
        """The call is over: its start cleared, its count one more. The rest of the line is left as it is,
        unread while no call is stamped (begin writes what of it differs)."""
        self.requests += 1
        if self.clears_reading:
            # First: a worker that dies between the two leaves a call that has ended (its client is as its
            # response left it), not a read whose request is on no line (a 502 to an idle client).
            self._words[self._reading_word] = 0
        self._floats[self._started_word] = 0.0
        self._words[self._requests_word] = self.requests

    def idle(self) -> None:
        """Not in a call, counting nothing new (the ASGI loop's beat, between requests)."""
        self._floats[self._started_word] = 0.0
        self._words[self._requests_word] = self.requests

    def clear(self) -> None:
        """Not in a call, touching nothing else (an ASGI call's own line, which counts nothing)."""
        self._floats[self._started_word] = 0.0

    def alive(self, on: bool) -> None:
        """A WSGI app thread takes this line (``on``) or leaves it: for the metrics' thread count."""
        self._map[self._at + _ALIVE_AT] = 1 if on else 0


class Waiting:
    """A WSGI worker's requests read and waiting for an app thread, each on a line of its own past
    the app threads' lines (which the ASGI runner uses for its calls instead).

    Read when the worker dies, such a line is a call whose response has not begun: its client gets
    a 502, not a silent close, since its request was read and is lost with the worker. Lines run
    out past 64 in all; a request waiting without one is closed, as before. One writer: the
    worker's loop thread, holding its lock.
    """

    def __init__(self, lines: list[SlotWriter]) -> None:
        self._free = lines[::-1]
        self._taken: dict[int, SlotWriter] = {}

    def add(self, conn_id: int, line: bytes) -> None:
        if self._free and conn_id not in self._taken:
            writer = self._taken[conn_id] = self._free.pop()
            writer.begin(line, conn_id)

    def remove(self, conn_id: int) -> None:
        """Its call begins (and its thread's line names it from now on), or it leaves the worker."""
        writer = self._taken.pop(conn_id, None)
        if writer is not None:
            writer.clear()
            self._free.append(writer)


class SpareLines:
    """An ASGI worker's lines past the first MAX_THREADS, made one at a time when its HTTP calls at once
    outnumber the lines it has (so never on a request's way while they do not), up to the slot's last: the
    slot's head counts them, and a dead worker's are read up to there."""

    def __init__(self, board: Scoreboard, slot: int) -> None:
        self.board, self.slot = board, slot
        self.made = MAX_THREADS
        self._words = board._slot(slot).words

    def take(self) -> SlotWriter | None:
        """One more line, or None when the slot has no more."""
        if self.made >= self.board.lines:
            return None
        line = self.board.writer(self.slot, self.made)
        self.made += 1
        self._words[_MADE_AT // _WORD] = self.made  # before the line is used: the supervisor reads it from here
        return line

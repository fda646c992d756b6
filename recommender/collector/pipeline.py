"""The file ingest's pipeline: files read and parsed in one process, written in this one.

Files (not stdin) are read and parsed in a second process while this one writes: reading,
inflating and parsing take about as much CPU as writing, and in one process they would share
one core through the GIL. The two talk through a pipe. A thread of the writing process takes
the parser's messages off it as they come, up to ``_AHEAD`` batches ahead of the writer (still
pickled), so parsing goes on while the writer commits; beyond that the pipe blocks the parser,
so the batches in flight are bounded whatever the file's size. On SQLite another thread copies
each commit's pages from the WAL back into the database (:mod:`recommender.collector.checkpoint`)
while the writer goes on.

Events are committed in groups (:mod:`recommender.collector.groupcommit`): a crash loses at
most the open transaction, which a re-run stores without duplicates.
"""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import queue
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import starmap
from multiprocessing.connection import Connection
from typing import Any

from ..config import Config
from ..errors import PayloadError
from ..store import Store
from ..usage import Classifier
from .checkpoint import Checkpointer
from .events import Event, WriteResult, event_fields
from .files import JsonLines, decode
from .groupcommit import GroupCommitWriter
from .prepared import PreparedBatch, prepare
from .writer import EventWriter

__all__ = [
    "BATCH",
    "Batch",
    "Done",
    "Flush",
    "Message",
    "Parse",
    "Position",
    "Prepared",
    "Progress",
    "Reject",
    "decoded",
    "ingest_files",
    "open_all",
]

# Events per batch handed to the writer (transactions group several, groupcommit.py): larger
# batches cost less writing CPU per event and more memory in both processes: 10,000 stays
# under the ingest's memory cap, 20,000 came close to it already on a small file (bench/).
BATCH = 10_000
# The first batches are smaller, doubling from 1,000 up to the batch size, and so are the last
# ones, once two batches or fewer are left in the last file (a quarter of the batch size, at
# least 1,000), and what was written before them is committed then: the writer starts on the
# first events as soon as they are parsed instead of after a whole batch, and the commit of
# the last full group overlaps the parsing of the last events instead of ending the run
# (with full-size batches both ends were a visible share of a file's time; bench/).
_FIRST_BATCH = 1_000
_TAIL_SHARE = 4
# Messages the writing process takes off the pipe ahead of the writer, still pickled: the
# parser goes on parsing while the writer upserts a transaction's rollups and commits it,
# instead of waiting on a full pipe.
_AHEAD = 4
_POLL = 0.1  # seconds: how soon the thread draining the pipe notices it should stop
# The cyclic garbage collector during a bulk ingest: every batch allocates hundreds of
# thousands of objects (tuples, events, parameters) that reference counting frees, but each
# 700 allocations the default thresholds walk the young objects, and the batches in flight
# again and again in the older generations, a noticeable share of the writing process's CPU
# (bench/). Collections stay on, 100,000 allocations apart; restored afterwards.
_GC_THRESHOLDS = (100_000, 50, 1000)
# A parser of one line's bytes (it decodes them: invalid JSON is a PayloadError).
Parse = Callable[[bytes, Classifier], list[Event]]


def decoded(parse: Callable[[Any, Classifier], list[Event]]) -> Parse:
    """A parser of decoded documents as a parser of lines."""
    return lambda line, classifier: parse(decode(line), classifier)


# How far the files are read: (file index, bytes read, total bytes or None).
Position = tuple[int, int, int | None]


# What the reading side tells the writing side, in file order (one of ``Message``).
@dataclass(frozen=True, slots=True)
class Batch:
    """Events to write; ``position`` as in :class:`Progress` (None: after the last file)."""

    events: list[Event]
    position: Position | None


@dataclass(frozen=True, slots=True)
class Prepared:
    """The same, made ready for SQLite by the parser (``writer.prepare``)."""

    events: PreparedBatch
    position: Position | None


@dataclass(frozen=True, slots=True)
class EventRows:
    """A batch on its way through the pipe: events as tuples (pickling slotted dataclasses
    calls Python code per object). The writing side turns it back into a :class:`Batch`."""

    rows: list[tuple[Any, ...]]
    position: Position | None


@dataclass(frozen=True, slots=True)
class Reject:
    """A line refused: its file's index, its number, why."""

    file: int
    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class Progress:
    """A file read to its end (or to ``position``)."""

    position: Position


@dataclass(frozen=True, slots=True)
class Flush:
    """Two batches or fewer are left: commit what is written (``GroupCommitWriter.flush``)."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The parsing process failed (a bug): its traceback, reported whole."""

    traceback: str


@dataclass(frozen=True, slots=True)
class Done:
    """Every file read."""


Message = Batch | Prepared | Reject | Progress | Flush | Done


def _read(files: list[str], batch_size: int, parse: Parse, classifier: Classifier
          ) -> Iterator[Batch | Reject | Progress | Flush | Done]:
    """Read and parse ``files`` into the messages above, in batches of up to ``batch_size``
    events (smaller first and last ones: ``_FIRST_BATCH``)."""
    batch: list[Event] = []
    limit = min(_FIRST_BATCH, batch_size)
    tail = min(batch_size, max(_FIRST_BATCH, batch_size // _TAIL_SHARE))
    last = len(files) - 1
    ending = False
    for index, path in enumerate(files):
        with JsonLines(path, raw=True) as lines:
            parsed = 0  # events of this file so far
            for number, obj in lines:
                if isinstance(obj, PayloadError):
                    yield Reject(index, number, obj.message)
                    continue
                try:
                    events = parse(obj, classifier)
                except PayloadError as exc:
                    yield Reject(index, number, exc.message)
                    continue
                batch.extend(events)
                parsed += len(events)
                if len(batch) >= limit:
                    position = (index, lines.bytes_read, lines.total_bytes)
                    yield Batch(batch, position)
                    batch = []
                    limit = min(2 * limit, batch_size)
                    if index == last and _near_end(position, parsed, 2 * batch_size):
                        if not ending:
                            ending = True
                            yield Flush()
                        limit = min(limit, tail)
            yield Progress((index, lines.bytes_read, lines.total_bytes))
    if batch:
        yield Batch(batch, None)
    yield Done()


def _near_end(position: Position, parsed: int, events: int) -> bool:
    """Whether at most about ``events`` are left in the file, judged from the share of its
    bytes read so far (for ``.gz``, compressed bytes fetched a MiB ahead of the parsing: the
    end is then seen once the file is fetched to its end, a MiB or less before it)."""
    _, done, total = position
    if total is None:
        return False
    return done >= total or (total - done) * parsed <= events * done


def _share_strings(batch: list[Event]) -> None:
    """One object per distinct value of the fields that repeat (repository, digest, user
    agent, ...): pickle then sends each once per batch and the writing process holds it once
    (a batch pickles to less than half, and the two processes' memory falls with it; bench/)."""
    same: dict[Any, Any] = {}
    one = same.setdefault
    for e in batch:
        e.source = one(e.source, e.source)
        e.action = one(e.action, e.action)
        e.usage = one(e.usage, e.usage)
        e.registry = one(e.registry, e.registry)
        e.repository = one(e.repository, e.repository)
        e.digest = one(e.digest, e.digest)
        e.tag = one(e.tag, e.tag)
        e.media_type = one(e.media_type, e.media_type)
        e.method = one(e.method, e.method)
        e.user_agent = one(e.user_agent, e.user_agent)
        e.actor = one(e.actor, e.actor)
        e.client_addr = one(e.client_addr, e.client_addr)


def _produce(pipe: Connection, files: list[str], batch_size: int, parse: Parse,
             classifier: Classifier, sqlite: bool, clock: Callable[[], datetime]) -> None:
    """The parsing process: :func:`_read`'s messages down ``pipe``. For SQLite a batch is
    also made ready for the store here (rows, manifests, rollups: see ``writer.prepare``),
    so the writing process only writes; otherwise its events go as tuples."""
    try:
        for message in _read(files, batch_size, parse, classifier):
            sent: Message | EventRows = message
            if isinstance(message, Batch):
                _share_strings(message.events)
                if sqlite:
                    sent = Prepared(prepare(message.events, now=clock()), message.position)
                else:
                    sent = EventRows(list(map(event_fields, message.events)), message.position)
            pipe.send(sent)
    except BrokenPipeError:
        pass  # the writer stopped (its own error is what the user sees)
    except BaseException:  # noqa: BLE001 - a bug in parsing: hand it to the writer, whole
        pipe.send(Failed(traceback.format_exc()))
    finally:
        pipe.close()


def _drain(receiver: Connection, ahead: queue.Queue[bytes | None], stop: threading.Event
           ) -> None:
    """Move the parsing process's messages, still pickled, from the pipe into ``ahead``
    (``None`` once the pipe is closed), until ``stop`` is set."""
    while not stop.is_set():
        if not receiver.poll(_POLL):
            continue
        try:
            data: bytes | None = receiver.recv_bytes()
        except (EOFError, OSError):
            data = None
        while not stop.is_set():
            try:
                ahead.put(data, timeout=_POLL)
                break
            except queue.Full:
                continue
        if data is None:
            return


@contextmanager
def _parsed_elsewhere(files: list[str], batch_size: int, parse: Parse, classifier: Classifier,
                      sqlite: bool, clock: Callable[[], datetime]) -> Iterator[Iterator[Message]]:
    """:func:`_read`'s messages, read and parsed in a forked process.

    Forked (not spawned): the child starts at once with this process's modules, config and
    classifier, and is started before any thread of ours exists. It never touches the store.
    """
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_produce,
                            args=(sender, files, batch_size, parse, classifier, sqlite, clock),
                            name="tagwarden-ingest-parse", daemon=True)
    child.start()
    sender.close()
    ahead: queue.Queue[bytes | None] = queue.Queue(maxsize=_AHEAD)
    stop = threading.Event()
    drain = threading.Thread(target=_drain, args=(receiver, ahead, stop),
                             name="tagwarden-ingest-pipe", daemon=True)
    drain.start()

    def messages() -> Iterator[Message]:
        while True:
            data = ahead.get()
            if data is None:
                child.join(timeout=1)  # for its exit code
                raise RuntimeError("the parsing process ended without finishing "
                                   f"(exit code {child.exitcode})")
            message: Message | EventRows | Failed = pickle.loads(data)
            del data
            if isinstance(message, EventRows):
                message = Batch(list(starmap(Event, message.rows)), message.position)
            elif isinstance(message, Failed):
                raise RuntimeError(f"the parsing process failed:\n{message.traceback}")
            yield message
            if isinstance(message, Done):
                return

    try:
        yield messages()
    finally:
        stop.set()
        drain.join()
        receiver.close()  # a parser blocked on a full pipe now gets EPIPE and ends
        child.join(timeout=5)
        if child.is_alive():
            child.terminate()
            child.join()


def open_all(files: list[str]) -> None:
    """Fail before storing anything when a file is missing (bad input changes nothing)."""
    for path in files:
        if path != "-":
            JsonLines(path).close()


@contextmanager
def _parsed_here(files: list[str], batch_size: int, parse: Parse, classifier: Classifier,
                 sqlite: bool, clock: Callable[[], datetime]) -> Iterator[Iterator[Message]]:
    yield _read(files, batch_size, parse, classifier)


@contextmanager
def _checkpoints(store: Store) -> Iterator[Checkpointer | None]:
    """SQLite: a :class:`Checkpointer` for the load's commits."""
    if store.dialect != "sqlite":
        yield None
        return
    with Checkpointer(store) as checkpointer:
        yield checkpointer


def ingest_files(files: list[str], batch_size: int, parse: Parse, classifier: Classifier,
                 store: Store, config: Config, *, committed: Callable[[WriteResult], None],
                 rejected: Callable[[int, int, str], None],
                 progress: Callable[[], AbstractContextManager[Callable[[Position | None], None]]],
                 clock: Callable[[], datetime]) -> None:
    """Read ``files`` (elsewhere when it can) and write their batches in order.

    ``committed`` is told each commit's counts, ``rejected`` each bad line (file index, line
    number, reason); ``progress()`` is entered once the parsing process runs (its threads, if
    any, must not be forked) and its function told each file position reached. ``clock``
    gives each batch its received time."""
    thresholds = gc.get_threshold()
    gc.set_threshold(*_GC_THRESHOLDS)  # before the fork: the parsing process inherits it
    try:
        _run(files, batch_size, parse, classifier, store, config, committed=committed,
             rejected=rejected, progress=progress, clock=clock)
    finally:
        gc.set_threshold(*thresholds)


def _run(files: list[str], batch_size: int, parse: Parse, classifier: Classifier,
         store: Store, config: Config, *, committed: Callable[[WriteResult], None],
         rejected: Callable[[int, int, str], None],
         progress: Callable[[], AbstractContextManager[Callable[[Position | None], None]]],
         clock: Callable[[], datetime]) -> None:
    # stdin stays in this process: a forked child gets /dev/null for it.
    elsewhere = "-" not in files and "fork" in multiprocessing.get_all_start_methods()
    source = _parsed_elsewhere if elsewhere else _parsed_here
    sqlite = store.dialect == "sqlite"

    # Threads start after the fork: the parsing process gets no copy of them (or of their
    # locks).
    with source(files, batch_size, parse, classifier, sqlite, clock) as messages, \
            _checkpoints(store) as checkpointer:
        writer = EventWriter.from_config(store, config, bulk=True, checkpointer=checkpointer)
        background = GroupCommitWriter(writer, on_commit=committed)
        try:
            with progress() as advanced:
                for message in messages:
                    match message:
                        case Batch(events, position) | Prepared(events, position):
                            background.submit(events, now=clock())
                            advanced(position)
                        case Reject(index, number, reason):
                            rejected(index, number, reason)
                        case Progress(position):
                            advanced(position)
                        case Flush():
                            background.flush()
        finally:
            background.close()

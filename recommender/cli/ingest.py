"""``tagwarden ingest``: load telemetry from files (JSON lines; ``-`` is stdin; ``.gz`` accepted).

Each line is parsed on its own: a bad line is counted as rejected, with its number, and the
file goes on. Events are read in batches of up to 10,000, so memory stays constant, and committed
in groups of up to 50,000 events (:mod:`recommender.collector.groupcommit`): a crash loses at
most the open transaction, which a re-run stores without duplicates.

Files (not stdin) are read and parsed in a second process while this one writes: reading,
inflating and parsing take about as much CPU as writing, and in one process they would share
one core through the GIL. The two talk through a pipe. A thread of the writing process takes
the parser's messages off it as they come, up to ``_AHEAD`` batches ahead of the writer (still
pickled), so parsing goes on while the writer commits; beyond that the pipe blocks the parser,
so the batches in flight are bounded whatever the file's size. On SQLite another thread copies
each commit's pages from the WAL back into the database (:mod:`recommender.collector.checkpoint`)
while the writer goes on.
"""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import queue
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from itertools import starmap
from multiprocessing.connection import Connection
from typing import Annotated, Any

import typer

from ..collector import deploy, distribution, harbor, k8s
from ..collector.checkpoint import Checkpointer
from ..collector.events import Event, WriteResult, event_fields
from ..collector.files import JsonLines, decode, decode_line
from ..collector.groupcommit import GroupCommitWriter
from ..collector.payload import check_time
from ..collector.writer import EventWriter, prepare
from ..config import Config
from ..errors import PayloadError
from ..store import Store
from ..timeutil import FUTURE_SKEW, parse_time, utcnow
from ..usage import Classifier
from .state import app, state

__all__ = ["ingest_app"]

ingest_app = typer.Typer(
    name="ingest", help="Load registry, deploy and Kubernetes telemetry from files.",
    no_args_is_help=True,
)
app.add_typer(ingest_app, name="ingest")

Files = Annotated[list[str], typer.Argument(help="JSON lines files; - for stdin; .gz accepted.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1,
                                        help="Events per batch handed to the writer.")]
Now = Annotated[str | None, typer.Option(
    "--now", help="Refuse (as bad lines) events later than this instant (RFC 3339); "
                  "default: a day past the current time.")]
# Events per batch handed to the writer (transactions group several, groupcommit.py): larger
# batches cost less writing CPU per event and more memory in both processes: 10,000 stays
# under the ingest's memory cap, 20,000 came close to it already on a small file (bench/).
_BATCH = 10_000
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
_SHOW_LINES = 10
_SHOW_REASONS = 5
# The cyclic garbage collector during a bulk ingest: every batch allocates hundreds of
# thousands of objects (tuples, events, parameters) that reference counting frees, but each
# 700 allocations the default thresholds walk the young objects, and the batches in flight
# again and again in the older generations, a noticeable share of the writing process's CPU
# (bench/). Collections stay on, 100,000 allocations apart; restored afterwards.
_GC_THRESHOLDS = (100_000, 50, 1000)
# A parser of one line's bytes (it decodes them: invalid JSON is a PayloadError).
Parse = Callable[[bytes, Classifier], list[Event]]


def _decoded(parse: Callable[[Any, Classifier], list[Event]]) -> Parse:
    """A parser of decoded documents as a parser of lines."""
    return lambda line, classifier: parse(decode(line), classifier)


class _Tally:
    """Counts and rejected lines across the files of one command."""

    def __init__(self, files: list[str]) -> None:
        self.many = len(files) > 1
        self.result = WriteResult()
        self.rejected: list[str] = []
        self.reasons: list[str] = []

    def reject(self, path: str, line: int, exc: PayloadError) -> None:
        label = f"{path}:{line}" if self.many else str(line)
        self.rejected.append(label)
        if len(self.reasons) < _SHOW_REASONS:
            message = exc.message if exc.message.startswith("line ") else f"line {line}: " \
                f"{exc.message}"
            self.reasons.append(f"{path}: {message}" if self.many else message)

    def rejected_text(self) -> str:
        if not self.rejected:
            return "rejected 0"
        shown = ", ".join(self.rejected[:_SHOW_LINES])
        more = ", …" if len(self.rejected) > _SHOW_LINES else ""
        return f"rejected {len(self.rejected)} (lines {shown}{more})"

    def finish(self, summary: str) -> None:
        for reason in self.reasons:
            print(reason, file=sys.stderr)
        print(summary)
        if self.rejected:
            raise typer.Exit(1)


# What the reading side tells the writing side, in file order:
#   ("batch", events, position) -- events to write; position as in "progress"
#   ("prepared", PreparedBatch, position) -- the same, made ready for SQLite by the parser
#   ("reject", file index, line number, message)
#   ("progress", (file index, bytes read, total bytes or None))
#   ("flush",)  -- two batches or fewer are left: commit what is written (GroupCommitWriter.flush)
#   ("error", traceback text)   -- the parsing process failed (a bug: it is reported whole)
#   ("done",)
Position = tuple[int, int, int | None]


def _read(files: list[str], batch_size: int, parse: Parse, classifier: Classifier
          ) -> Iterator[tuple[Any, ...]]:
    """Read and parse ``files`` into the messages above (``events`` as :class:`Event`), in
    batches of up to ``batch_size`` events (smaller first and last ones: ``_FIRST_BATCH``)."""
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
                    yield ("reject", index, number, obj.message)
                    continue
                try:
                    events = parse(obj, classifier)
                except PayloadError as exc:
                    yield ("reject", index, number, exc.message)
                    continue
                batch.extend(events)
                parsed += len(events)
                if len(batch) >= limit:
                    position = (index, lines.bytes_read, lines.total_bytes)
                    yield ("batch", batch, position)
                    batch = []
                    limit = min(2 * limit, batch_size)
                    if index == last and _near_end(position, parsed, 2 * batch_size):
                        if not ending:
                            ending = True
                            yield ("flush",)
                        limit = min(limit, tail)
            yield ("progress", (index, lines.bytes_read, lines.total_bytes))
    if batch:
        yield ("batch", batch, None)
    yield ("done",)


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
             classifier: Classifier, sqlite: bool) -> None:
    """The parsing process: :func:`_read`'s messages down ``pipe``. For SQLite a batch is
    also made ready for the store here (rows, manifests, rollups: see ``writer.prepare``),
    so the writing process only writes; otherwise its events go as tuples."""
    try:
        for message in _read(files, batch_size, parse, classifier):
            if message[0] == "batch":
                _share_strings(message[1])
                if sqlite:
                    message = ("prepared", prepare(message[1], now=utcnow()), message[2])
                else:
                    message = ("batch", list(map(event_fields, message[1])), message[2])
            pipe.send(message)
    except BrokenPipeError:
        pass  # the writer stopped (its own error is what the user sees)
    except BaseException:  # noqa: BLE001 - a bug in parsing: hand it to the writer, whole
        pipe.send(("error", traceback.format_exc()))
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
                      sqlite: bool) -> Iterator[Iterator[tuple[Any, ...]]]:
    """:func:`_read`'s messages, read and parsed in a forked process.

    Forked (not spawned): the child starts at once with this process's modules, config and
    classifier, and is started before any thread of ours exists. It never touches the store.
    """
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_produce,
                            args=(sender, files, batch_size, parse, classifier, sqlite),
                            name="tagwarden-ingest-parse", daemon=True)
    child.start()
    sender.close()
    ahead: queue.Queue[bytes | None] = queue.Queue(maxsize=_AHEAD)
    stop = threading.Event()
    drain = threading.Thread(target=_drain, args=(receiver, ahead, stop),
                             name="tagwarden-ingest-pipe", daemon=True)
    drain.start()

    def messages() -> Iterator[tuple[Any, ...]]:
        while True:
            data = ahead.get()
            if data is None:
                child.join(timeout=1)  # for its exit code
                raise RuntimeError("the parsing process ended without finishing "
                                   f"(exit code {child.exitcode})")
            message = pickle.loads(data)
            del data
            if message[0] == "batch":
                message = ("batch", list(starmap(Event, message[1])), message[2])
            elif message[0] == "error":
                raise RuntimeError(f"the parsing process failed:\n{message[1]}")
            yield message
            if message[0] == "done":
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


@contextmanager
def _progress(label: str, files: list[str]) -> Iterator[Callable[[Position | None], None]]:
    """A Rich progress bar over the bytes of each file, only when stderr is a terminal."""
    if not sys.stderr.isatty():
        yield lambda _position: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        tasks: dict[int, Any] = {}

        def update(position: Position | None) -> None:
            if position is None:
                return
            index, done, total = position
            if index not in tasks:
                tasks[index] = bar.add_task(f"{label} {files[index]}", total=total)
            bar.update(tasks[index], completed=done)

        yield update


def _open_all(files: list[str]) -> None:
    """Fail before storing anything when a file is missing (bad input changes nothing)."""
    for path in files:
        if path != "-":
            JsonLines(path).close()


@contextmanager
def _parsed_here(files: list[str], batch_size: int, parse: Parse, classifier: Classifier,
                 sqlite: bool) -> Iterator[Iterator[tuple[Any, ...]]]:
    yield _read(files, batch_size, parse, classifier)


def _ingest_events(ctx: typer.Context, files: list[str], batch_size: int, label: str,
                   parse: Parse) -> None:
    st = state(ctx)
    classifier = Classifier.from_config(st.config)
    _open_all(files)
    tally = _Tally(files)
    thresholds = gc.get_threshold()
    gc.set_threshold(*_GC_THRESHOLDS)  # before the fork: the parsing process inherits it
    try:
        _run(files, batch_size, label, parse, classifier, st.store, st.config, tally)
    finally:
        gc.set_threshold(*thresholds)
    r = tally.result
    tally.finish(f"read {r.received}, stored {r.stored}, duplicates {r.duplicates}, "
                 f"{tally.rejected_text()}")


@contextmanager
def _checkpoints(store: Store) -> Iterator[Checkpointer | None]:
    """SQLite: a :class:`Checkpointer` for the load's commits."""
    if store.dialect != "sqlite":
        yield None
        return
    with Checkpointer(store) as checkpointer:
        yield checkpointer


def _run(files: list[str], batch_size: int, label: str, parse: Parse, classifier: Classifier,
         store: Store, config: Config, tally: _Tally) -> None:
    """Read ``files`` (elsewhere when it can) and write their batches in order."""
    # stdin stays in this process: a forked child gets /dev/null for it.
    elsewhere = "-" not in files and "fork" in multiprocessing.get_all_start_methods()
    source = _parsed_elsewhere if elsewhere else _parsed_here
    sqlite = store.dialect == "sqlite"

    def committed(result: WriteResult) -> None:
        tally.result += result

    # Threads start after the fork: the parsing process gets no copy of them (or of their
    # locks).
    with source(files, batch_size, parse, classifier, sqlite) as messages, \
            _checkpoints(store) as checkpointer:
        writer = EventWriter.from_config(store, config, bulk=True, checkpointer=checkpointer)
        background = GroupCommitWriter(writer, on_commit=committed)
        try:
            with _progress(label, files) as progress:
                for message in messages:
                    kind = message[0]
                    if kind in ("batch", "prepared"):
                        background.submit(message[1], now=utcnow())
                        progress(message[2])
                    elif kind == "reject":
                        _, index, number, reason = message
                        tally.reject(files[index], number, PayloadError(reason))
                    elif kind == "progress":
                        progress(message[1])
                    elif kind == "flush":
                        background.flush()
        finally:
            background.close()


def _latest(now: str | None) -> datetime:
    """The latest event time a file may hold: ``--now``, or the clock plus a sender's skew."""
    if now is None:
        return utcnow() + FUTURE_SKEW
    try:
        return parse_time(now)
    except (ValueError, OverflowError) as exc:
        raise PayloadError(f"--now: {exc}", where="now") from None


@ingest_app.command("distribution")
def ingest_distribution(ctx: typer.Context, files: Files, batch_size: BatchSize = _BATCH,
                        now: Now = None) -> None:
    """Distribution notification envelopes, one per line."""
    _ingest_events(ctx, files, batch_size, "distribution",
                   partial(distribution.parse_envelope_line, latest=_latest(now)))


@ingest_app.command("harbor")
def ingest_harbor(ctx: typer.Context, files: Files, batch_size: BatchSize = _BATCH,
                  now: Now = None) -> None:
    """Harbor webhook payloads (Default or CloudEvents), one per line."""
    _ingest_events(ctx, files, batch_size, "harbor",
                   _decoded(partial(harbor.parse_webhook, latest=_latest(now))))


@ingest_app.command("deploys")
def ingest_deploys(ctx: typer.Context, files: Files, batch_size: BatchSize = _BATCH,
                   now: Now = None) -> None:
    """Deploy events, one object (or array) per line."""
    latest = _latest(now)
    _ingest_events(ctx, files, batch_size, "deploys",
                   _decoded(lambda obj, _classifier: deploy.parse_deploys(obj, latest=latest)))


@ingest_app.command("k8s")
def ingest_k8s(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(
        help="`kubectl get pods -A -o json` output, or JSON lines of "
             '{"source", "taken_at", "list"}; - for stdin.')],
    at: Annotated[str | None, typer.Option(
        "--at", help="When the pod list was taken (RFC 3339; default now).")] = None,
    source: Annotated[str, typer.Option(
        "--source", help="Cluster name (lines that name their own source keep it).")
    ] = "default",
    now: Now = None,
) -> None:
    """What runs in Kubernetes: one pod list, or JSON lines of snapshots."""
    st = state(ctx)
    latest = _latest(now)
    taken_at: datetime | None = None
    if at is not None:
        try:
            taken_at = check_time(parse_time(at), "--at", latest)
        except (ValueError, OverflowError) as exc:
            raise PayloadError(f"--at: {exc}", where="at") from None
    writer = EventWriter.from_config(st.store, st.config)
    tally = _Tally([file])
    snapshots = pods = refs = 0
    first = True
    with JsonLines(file) as lines:
        for number, obj in lines:
            if first and not (isinstance(obj, dict) and "list" in obj):
                # One (pretty-printed) document, not snapshot lines: the first line read is
                # only its beginning.
                doc = decode_line(lines.last_raw + lines.rest(), 1)
                if isinstance(doc, PayloadError):
                    raise PayloadError(f"{file}: not a pod list nor snapshot lines "
                                       f"({doc.message})", file=file)
                snap = k8s.parse_pod_list(doc, source=source, taken_at=taken_at or utcnow())
                n = writer.write_snapshot(snap)
                print(f"read 1 snapshot of {snap.pods} pods from {source}: "
                      f"stored {n} running references")
                return
            first = False
            try:
                if isinstance(obj, PayloadError):
                    raise obj
                if not isinstance(obj, dict):
                    raise PayloadError("line must be an object", where="")
                src = obj.get("source") or source
                if not isinstance(src, str):
                    raise PayloadError("source must be a string", where="source")
                when = obj.get("taken_at")
                line_at = (taken_at or utcnow()) if when is None else _line_time(when, latest)
                snap = k8s.parse_pod_list(obj.get("list"), source=src, taken_at=line_at)
            except PayloadError as exc:
                tally.reject(file, number, exc)
                continue
            refs += writer.write_snapshot(snap)
            snapshots += 1
            pods += snap.pods
    tally.finish(f"read {snapshots + len(tally.rejected)} snapshots, stored {snapshots} "
                 f"({pods} pods, {refs} running references), {tally.rejected_text()}")


def _line_time(value: Any, latest: datetime) -> datetime:
    try:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(f"not a time: {value!r}")
        return check_time(parse_time(value), "taken_at", latest)
    except (ValueError, OverflowError, OSError) as exc:
        raise PayloadError(f"taken_at: {exc}", where="taken_at") from None

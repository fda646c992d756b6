"""The audit log: append-only and hash-chained, so any edit, removal or reordering shows.

Each row's ``hash`` is sha256 over the previous row's hash and a canonical rendering of the row
(seq, time, kind, actor and the data as canonical JSON text, stored verbatim). The chain's head
(last seq and hash) lives in a one-row table that every appender locks first: on PostgreSQL a
row lock, on SQLite the database write lock. That keeps one chain when several processes append
at once, and lets :meth:`AuditLog.verify` notice rows removed from the end.

Appends join the caller's transaction when given its connection, so a decision and its audit
row commit (or roll back) together.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from sqlalchemy import Connection, select, update

from .errors import TagwardenError
from .store import Store, dialect_insert
from .store.tables import audit_head, audit_log

__all__ = ["GENESIS", "AuditEntry", "AuditLog", "VerifyResult", "canonical_json", "redact_url"]

GENESIS = "0" * 64


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    return str(value)


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 kept, datetimes as ISO UTC."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=_default)


def redact_url(url: str) -> str:
    """A URL without credentials or query string (tokens travel in queries)."""
    import httpx

    parsed = httpx.URL(url)
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


def _row_hash(prev_hash: str, seq: int, at: datetime, kind: str, actor: str, data: str) -> str:
    head = canonical_json({"seq": seq, "at": _iso(at), "kind": kind, "actor": actor})
    return hashlib.sha256(f"{prev_hash}\n{head}\n{data}".encode()).hexdigest()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: datetime
    kind: str
    actor: str
    data: dict[str, Any]
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": _iso(self.at), "kind": self.kind, "actor": self.actor,
                "data": self.data, "prev_hash": self.prev_hash, "hash": self.hash}


@dataclass(frozen=True)
class VerifyResult:
    """``ok`` or the first bad row (``bad_seq``) and what is wrong with it (``problem``)."""

    ok: bool
    rows: int
    bad_seq: int | None = None
    problem: str | None = None
    head: str = GENESIS  # the last row's hash: keep it elsewhere to detect a wholesale rewrite


class AuditLog:
    """``AuditLog(store).append(kind, actor, data, now=now, conn=conn)``; ``verify()``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def append(
        self,
        kind: str,
        actor: str,
        data: Mapping[str, Any],
        *,
        now: datetime,
        conn: Connection | None = None,
    ) -> AuditEntry:
        """Append one row; inside ``conn``'s transaction when given, else in its own."""
        if conn is None:
            with self.store.begin() as own:
                return self.append(kind, actor, data, now=now, conn=own)
        return self.append_many(conn, [(kind, actor, data)], now=now)[0]

    def append_many(
        self,
        conn: Connection,
        rows: Sequence[tuple[str, str, Mapping[str, Any]]],
        *,
        now: datetime,
    ) -> list[AuditEntry]:
        """Append several rows under one lock of the head (one round of locking per call)."""
        if now.tzinfo is None:
            raise TagwardenError("audit times must be timezone-aware", at=str(now))
        seq, prev = self.lock(conn)
        entries: list[AuditEntry] = []
        values: list[dict[str, Any]] = []
        for kind, actor, data in rows:
            seq += 1
            text = canonical_json(dict(data))
            digest = _row_hash(prev, seq, now, kind, actor, text)
            values.append({"seq": seq, "at": now, "kind": kind, "actor": actor, "data": text,
                           "prev_hash": prev, "hash": digest})
            entries.append(AuditEntry(seq, now, kind, actor, json.loads(text), prev, digest))
            prev = digest
        if values:
            conn.execute(audit_log.insert(), values)
            conn.execute(update(audit_head).where(audit_head.c.id == 1)
                         .values(seq=seq, hash=prev))
        return entries

    def lock(self, conn: Connection) -> tuple[int, str]:
        """Lock the chain's head until ``conn``'s transaction ends; returns (seq, hash)."""
        # A no-op UPDATE takes the lock on both databases: PostgreSQL locks the row until
        # commit, SQLite takes its single write lock. What it returns is then safe to extend.
        take = (update(audit_head).where(audit_head.c.id == 1).values(seq=audit_head.c.seq)
                .returning(audit_head.c.seq, audit_head.c.hash))
        row = conn.execute(take).first()
        if row is None:  # the very first append: create the head, then take it
            conn.execute(dialect_insert(conn, audit_head)
                         .values(id=1, seq=0, hash=GENESIS)
                         .on_conflict_do_nothing())  # type: ignore[attr-defined]
            row = conn.execute(take).one()
        return int(row.seq), str(row.hash)

    def entries(self, *, kind: str | None = None, after: int = 0,
                conn: Connection | None = None) -> Iterator[AuditEntry]:
        """Rows in chain order (optionally one kind, after a seq)."""
        query = select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq)
        if kind is not None:
            query = query.where(audit_log.c.kind == kind)
        if conn is None:
            with self.store.connect() as own:
                yield from self.entries(kind=kind, after=after, conn=own)
            return
        for row in conn.execute(query):
            yield AuditEntry(int(row.seq), row.at, row.kind, row.actor, json.loads(row.data),
                             row.prev_hash, row.hash)

    def verify(self) -> VerifyResult:
        """Recompute the chain; the first row that does not fit is reported."""
        with self.store.connect() as conn:
            expected_seq = 1
            prev = GENESIS
            count = 0
            for row in conn.execute(select(audit_log).order_by(audit_log.c.seq)):
                count += 1
                if row.seq != expected_seq:
                    return VerifyResult(False, count, expected_seq,
                                        f"row {expected_seq} is missing (next is {row.seq})")
                if row.prev_hash != prev:
                    return VerifyResult(False, count, row.seq,
                                        "prev_hash does not match the previous row's hash")
                if _row_hash(prev, row.seq, row.at, row.kind, row.actor, row.data) != row.hash:
                    return VerifyResult(False, count, row.seq,
                                        "row content does not match its hash")
                prev = row.hash
                expected_seq += 1
            head = conn.execute(select(audit_head.c.seq, audit_head.c.hash)
                                .where(audit_head.c.id == 1)).first()
        last = expected_seq - 1
        if head is not None and (head.seq != last or head.hash != prev):
            return VerifyResult(False, count, last + 1,
                                f"rows after {last} were removed (head is at {head.seq})")
        return VerifyResult(True, count, head=prev)

    def export(self, out: TextIO, *, fmt: str = "jsonl") -> int:
        """Write every row as one JSON line; returns the number of rows."""
        if fmt != "jsonl":
            raise TagwardenError(f"unknown export format {fmt!r} (use jsonl)", format=fmt)
        count = 0
        for entry in self.entries():
            out.write(canonical_json(entry.as_dict()) + "\n")
            count += 1
        return count

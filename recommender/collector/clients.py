"""Distinct real clients per manifest: who pulled it for use, and since when.

The daily rollups count pulls but do not say who pulled, so "how many distinct machines use
this image" (a base image pulled by forty CI runners versus a build pulled once by the runner
that made it) needs its own table, ``manifest_clients``: one row per (repository, digest,
client) with the earliest use-class pull seen. The writer calls :func:`record_clients` inside
its transaction with the batch's new events; :func:`backfill_clients` fills the table from the
raw ``events`` table for stores loaded before it existed.

The client key is the host of the request address without its port: a node, a CI runner, a
laptop. Each pull comes from a fresh ephemeral port, so the full address would count one runner
thousands of times. Known limits, accepted: clients behind one NAT or proxy address count as
one (an undercount; the rollups still count every pull); a proxy that forwards
``X-Forwarded-For`` lists gives the first (originating) address; a pull that carries no address
(some webhook sources) is not counted at all rather than lumped under a made-up client. Only
pulls with a digest count: a tag-only pull counts once the writer has resolved its digest.

"Keep the earliest" makes late and out-of-order deliveries and replays harmless: the row's
``first_seen`` only ever moves back in time, and a duplicate changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from ..store.tables import events, manifest_clients
from .bulk import insert_rows

__all__ = ["ClientPlan", "backfill_clients", "client_key", "plan_clients", "record_clients",
           "write_clients"]

_COLUMNS = ("repository", "digest", "client", "first_seen")
_UPSERT = ("ON CONFLICT (repository, digest, client) DO UPDATE SET first_seen = "
           "excluded.first_seen WHERE excluded.first_seen < manifest_clients.first_seen")
_BACKFILL_CHUNK = 50_000

# (repository, digest, action, usage, client_addr, time) of one event; time a datetime or,
# on SQLite's hot path, the stored string (fixed width: it sorts as the time does).
ClientItem = tuple[str, "str | None", str, str, "str | None", Any]
# The earliest time per (repository, digest, client).
ClientPlan = dict[tuple[str, str, str], Any]


def client_key(addr: str | None) -> str | None:
    """The client of a request address: its host without the port, or None when unknown.

    ``10.0.0.7:51234`` -> ``10.0.0.7``; ``[2001:db8::1]:443`` -> ``2001:db8::1``; a bare IPv6
    address stays whole; ``a, b`` (a forwarded list) -> ``a``.
    """
    if not addr:
        return None
    host = addr.split(",", 1)[0].strip()
    if host.startswith("["):
        end = host.find("]")
        host = host[1:end] if end > 0 else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    host = host.strip().lower()
    return host[:64] or None


def plan_clients(items: Iterable[ClientItem], into: ClientPlan | None = None) -> ClientPlan:
    """The earliest time per (repository, digest, client) of the use-class pulls, added to
    ``into`` when given (the writer plans a batch away from the store, then adds the tag-only
    pulls once their digest is known)."""
    first: ClientPlan = {} if into is None else into
    keys: dict[str, str | None] = {}  # a batch repeats a few hundred addresses
    for repository, digest, action, usage, addr, time in items:
        if action != "pull" or usage != "use" or not digest or not addr:
            continue
        client = keys.get(addr)
        if client is None:
            if addr in keys:
                continue
            client = keys[addr] = client_key(addr)
            if client is None:
                continue
        key = (repository, digest, client)
        cur = first.get(key)
        if cur is None or time < cur:
            first[key] = time
    return first


def record_clients(conn: Connection, items: Iterable[ClientItem]) -> int:
    """Record the clients of ``items`` (a batch's new events) in the caller's transaction.

    One pass in Python, then one multi-row insert-or-keep-the-earliest in key order (two
    PostgreSQL writers then lock shared rows in the same order: no deadlock). Returns how
    many (repository, digest, client) rows the batch touched. Times must all be datetimes or
    all SQLite strings (the writer's hot path), never mixed.
    """
    return write_clients(conn, plan_clients(items))


def write_clients(conn: Connection, first: ClientPlan) -> int:
    """Write a plan made by :func:`plan_clients` (see :func:`record_clients`)."""
    if not first:
        return 0
    # Key order, sorted on the joined key: the same order as the tuples' (no part holds a NUL:
    # PostgreSQL refuses one in text), at a third of the CPU (string against tuple compares).
    rows = [(*k, first[k]) for k in sorted(first, key="\0".join)]
    converted = isinstance(rows[0][3], str)
    if converted and conn.dialect.name != "sqlite":
        raise ValueError("record_clients: SQLite time strings given to a PostgreSQL store")
    insert_rows(conn, manifest_clients, _COLUMNS, rows, suffix=_UPSERT, converted=converted)
    return len(rows)


def backfill_clients(conn: Connection, *, until: datetime | None = None) -> int:
    """Fill ``manifest_clients`` from the raw events (at or before ``until`` if given).

    Idempotent and safe beside the writer (keep-the-earliest). Raw events older than the
    store's retention have been pruned: on such a store the table starts at the oldest event
    kept. Returns how many rows were written or confirmed.

    Creates the table when missing: the initial migration is regenerated in place until the
    first release, so a store migrated before the table existed is at the head revision
    without it.
    """
    manifest_clients.create(conn, checkfirst=True)
    e = events.c
    stmt = (select(e.repository, e.digest, e.client_addr, e.time)
            .where(e.action == "pull", e.usage == "use", e.digest.is_not(None),
                   e.client_addr.is_not(None)))
    if until is not None:
        stmt = stmt.where(e.time <= until)
    result = conn.execute(stmt)
    total = 0
    while True:
        chunk = result.fetchmany(_BACKFILL_CHUNK)
        if not chunk:
            break
        total += record_clients(conn, ((r[0], r[1], "pull", "use", r[2], r[3]) for r in chunk))
    return total

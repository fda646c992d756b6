"""EventWriter records distinct real clients (K), on SQLite and PostgreSQL: new events only,
tag-only pulls once resolved, the earliest pull kept across batches and retries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from recommender.collector.events import Event
from recommender.collector.writer import EventWriter
from recommender.store import Store
from recommender.store.tables import manifest_clients as mc

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 10, tzinfo=UTC)
D1 = "sha256:" + "1" * 64
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _ev(eid: str, action: str, hours: float, addr: str | None, *, digest: str | None = D1,
        tag: str | None = None, usage: str = "use") -> Event:
    return Event(time=T0 + timedelta(hours=hours), source="distribution", source_event_id=eid,
                 action=action, usage=usage, repository="shop/api", digest=digest, tag=tag,
                 media_type=MANIFEST, client_addr=addr)


def _clients(store: Store) -> dict[str, datetime]:
    with store.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(
            select(mc.c.client, mc.c.first_seen).where(mc.c.digest == D1))}


def test_writer_records_each_client_once_with_its_earliest_pull(store: Store) -> None:
    w = EventWriter(store)
    w.write([_ev("p", "push", 0, "10.0.0.1:1", tag="v1"),
             _ev("a", "pull", 2, "10.0.0.7:50001"),
             _ev("b", "pull", 3, "10.0.0.7:50002"),
             _ev("c", "pull", 1, "10.0.0.9:1", usage="scanner"),
             _ev("d", "pull", 4, "10.0.0.8:1", digest=None, tag="v1")], now=NOW)
    assert _clients(store) == {"10.0.0.7": T0 + timedelta(hours=2),
                               "10.0.0.8": T0 + timedelta(hours=4)}
    # A retried event changes nothing; a late one moves first_seen back.
    w.write([_ev("a", "pull", 2, "10.0.0.7:50001"),
             _ev("e", "pull", 1.5, "10.0.0.7:50003"),
             _ev("f", "pull", 3.5, "10.0.0.8:2", digest=None, tag="v1")], now=NOW)
    assert _clients(store) == {"10.0.0.7": T0 + timedelta(hours=1.5),
                               "10.0.0.8": T0 + timedelta(hours=3.5)}

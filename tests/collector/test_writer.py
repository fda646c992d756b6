"""EventWriter contract: every test runs on SQLite and on PostgreSQL (the ``store`` fixture)."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import select

from recommender.collector.events import Event, PodSnapshot, RunningRef
from recommender.collector.writer import EventWriter
from recommender.store import Store
from recommender.store.tables import events, k8s_snapshots, manifests, rollups, running_refs
from recommender.store.tables import tag_history as th

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 10, tzinfo=UTC)
D1, D2, D3 = ("sha256:" + c * 64 for c in "123")
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_ids = iter(range(1, 10**9))


def ev(action: str, *, at: timedelta = timedelta(0), digest: str | None = None,
       tag: str | None = None, repo: str = "shop/api", usage: str = "use",
       source: str = "distribution", eid: str | None = None, media_type: str | None = MANIFEST,
       ) -> Event:
    return Event(time=T0 + at, source=source, source_event_id=eid or f"e{next(_ids)}",
                 action=action, usage=usage, repository=repo, digest=digest, tag=tag,
                 media_type=media_type if action != "delete" else None)


def history(store: Store, tag: str = "v1", repo: str = "shop/api") -> list[tuple[Any, ...]]:
    with store.connect() as conn:
        rows = conn.execute(select(th.c.digest, th.c.valid_from, th.c.valid_to)
                            .where(th.c.repository == repo, th.c.tag == tag)
                            .order_by(th.c.valid_from)).all()
    return [(d, f - T0, None if t is None else t - T0) for d, f, t in rows]


def rollup_rows(store: Store) -> set[tuple[Any, ...]]:
    with store.connect() as conn:
        return {tuple(r) for r in conn.execute(select(
            rollups.c.day, rollups.c.digest, rollups.c.tag, rollups.c.action, rollups.c.usage,
            rollups.c["count"], rollups.c.first_at, rollups.c.last_at))}


def h(n: float) -> timedelta:
    return timedelta(hours=n)


def test_retried_events_are_stored_once(store: Store) -> None:
    w = EventWriter(store)
    batch = [ev("pull", digest=D1, tag="v1", eid="a"), ev("pull", digest=D1, eid="b"),
             ev("pull", digest=D1, eid="a")]  # a duplicate inside the batch too
    first = w.write(batch, now=NOW)
    assert (first.received, first.stored, first.duplicates) == (3, 2, 1)
    again = w.write(batch[:2] + [ev("pull", digest=D1, eid="c")], now=NOW)
    assert (again.received, again.stored, again.duplicates) == (3, 1, 2)
    with store.connect() as conn:
        assert conn.execute(select(events.c.source_event_id).order_by(
            events.c.source_event_id)).scalars().all() == ["a", "b", "c"]
        assert conn.execute(select(events.c.received_at)).scalars().first() == NOW
    # the rollup counts each event once, whatever the retries
    assert sum(r[5] for r in rollup_rows(store)) == 3


def test_daily_rollups_add_up_across_batches(store: Store) -> None:
    w = EventWriter(store)
    w.write([ev("pull", digest=D1, tag="v1", at=h(1)),
             ev("pull", digest=D1, tag="v1", at=h(3)),
             ev("pull", digest=D1, usage="scanner", at=h(2)),
             ev("pull", digest=D1, tag="v1", at=h(13))], now=NOW)  # next day (UTC)
    w.write([ev("pull", digest=D1, tag="v1", at=h(0.5)),
             ev("pull", digest=D1, tag="v1", at=h(2))], now=NOW)
    day = date(2026, 3, 1)
    assert rollup_rows(store) == {
        (day, D1, "v1", "pull", "use", 4, T0 + h(0.5), T0 + h(3)),
        (day, D1, "", "pull", "scanner", 1, T0 + h(2), T0 + h(2)),
        (date(2026, 3, 2), D1, "v1", "pull", "use", 1, T0 + h(13), T0 + h(13)),
    }


def test_pushes_build_the_tag_history(store: Store) -> None:
    w = EventWriter(store)
    w.write([ev("push", digest=D1, tag="v1", at=h(0))], now=NOW)
    w.write([ev("push", digest=D1, tag="v1", at=h(1))], now=NOW)  # same digest again: kept
    w.write([ev("push", digest=D2, tag="v1", at=h(5))], now=NOW)
    assert history(store) == [(D1, h(0), h(1)), (D1, h(1), h(5)), (D2, h(5), None)]
    # a late push between the two D1 pushes ends where the second D1 push begins
    w.write([ev("push", digest=D3, tag="v1", at=h(0.5))], now=NOW)
    assert history(store) == [(D1, h(0), h(0.5)), (D3, h(0.5), h(1)), (D1, h(1), h(5)),
                              (D2, h(5), None)]


def test_a_late_push_fits_into_its_place(store: Store) -> None:
    w = EventWriter(store)
    w.write([ev("push", digest=D3, tag="v1", at=h(10))], now=NOW)
    w.write([ev("push", digest=D1, tag="v1", at=h(0))], now=NOW)  # arrives late
    w.write([ev("push", digest=D2, tag="v1", at=h(5))], now=NOW)  # later still, in between
    assert history(store) == [(D1, h(0), h(5)), (D2, h(5), h(10)), (D3, h(10), None)]
    # a late push of the digest that follows still starts its own interval
    w.write([ev("push", digest=D3, tag="v1", at=h(8))], now=NOW)
    assert history(store) == [(D1, h(0), h(5)), (D2, h(5), h(8)), (D3, h(8), h(10)),
                              (D3, h(10), None)]
    # a late tag delete ends the interval it falls in; a later late push fills the gap only
    w.write([ev("delete", tag="v1", at=h(3))], now=NOW)
    w.write([ev("push", digest=D2, tag="v1", at=h(4))], now=NOW)
    assert history(store)[:3] == [(D1, h(0), h(3)), (D2, h(4), h(5)), (D2, h(5), h(8))]


def test_one_batch_out_of_order_gives_the_same_history(store: Store) -> None:
    EventWriter(store).write([ev("push", digest=D3, tag="v1", at=h(10)),
                              ev("push", digest=D1, tag="v1", at=h(0)),
                              ev("push", digest=D2, tag="v1", at=h(5))], now=NOW)
    assert history(store) == [(D1, h(0), h(5)), (D2, h(5), h(10)), (D3, h(10), None)]


def test_deletes_close_tags_and_mark_the_manifest(store: Store) -> None:
    w = EventWriter(store)
    w.write([ev("push", digest=D1, tag="v1", at=h(0)),
             ev("push", digest=D1, tag="stable", at=h(1)),
             ev("push", digest=D2, tag="v2", at=h(2))], now=NOW)
    w.write([ev("delete", tag="v2", at=h(3))], now=NOW)  # a tag delete (registry 3.x)
    assert history(store, "v2") == [(D2, h(2), h(3))]
    w.write([ev("delete", digest=D1, at=h(4)), ev("delete", tag="v1", at=h(4)),
             ev("delete", tag="stable", at=h(4))], now=NOW)
    assert history(store, "v1") == [(D1, h(0), h(4))]
    assert history(store, "stable") == [(D1, h(1), h(4))]
    with store.connect() as conn:
        got = dict(conn.execute(select(manifests.c.digest, manifests.c.deleted_at)).all())
    assert got == {D1: T0 + h(4), D2: None}
    # the same content pushed again brings it back
    w.write([ev("push", digest=D1, tag="v1", at=h(6))], now=NOW)
    assert history(store, "v1") == [(D1, h(0), h(4)), (D1, h(6), None)]
    with store.connect() as conn:
        assert conn.execute(select(manifests.c.deleted_at).where(
            manifests.c.digest == D1)).scalar_one() is None


def test_a_repository_delete_ends_everything_in_it(store: Store) -> None:
    w = EventWriter(store)
    w.write([ev("push", digest=D1, tag="v1", at=h(0)), ev("push", digest=D2, tag="v2", at=h(1)),
             ev("push", digest=D3, tag="v1", at=h(0), repo="other/app")], now=NOW)
    w.write([ev("delete", at=h(2)), ev("push", digest=D3, tag="v3", at=h(3))], now=NOW)
    assert history(store, "v1") == [(D1, h(0), h(2))]
    assert history(store, "v2") == [(D2, h(1), h(2))]
    assert history(store, "v3") == [(D3, h(3), None)]  # pushed after: a new life
    assert history(store, "v1", repo="other/app") == [(D3, h(0), None)]
    with store.connect() as conn:
        got = {(r, d): t for r, d, t in conn.execute(select(
            manifests.c.repository, manifests.c.digest, manifests.c.deleted_at))}
    assert got == {("shop/api", D1): T0 + h(2), ("shop/api", D2): T0 + h(2),
                   ("shop/api", D3): None, ("other/app", D3): None}


def test_delete_and_re_push_in_one_batch(store: Store) -> None:
    EventWriter(store).write([ev("push", digest=D1, tag="v1", at=h(0)),
                              ev("delete", digest=D1, at=h(1)),
                              ev("push", digest=D1, tag="v1", at=h(2))], now=NOW)
    with store.connect() as conn:
        assert conn.execute(select(manifests.c.deleted_at)).scalar_one() is None
    assert history(store) == [(D1, h(0), h(1)), (D1, h(2), None)]
    EventWriter(store).write([ev("delete", digest=D1, at=h(3))], now=NOW)
    with store.connect() as conn:
        assert conn.execute(select(manifests.c.deleted_at)).scalar_one() == T0 + h(3)


def test_manifests_first_seen_is_the_earliest_sighting(store: Store) -> None:
    w = EventWriter(store)
    w.write([ev("pull", digest=D1, tag="v1", at=h(3))], now=NOW)
    w.write([ev("push", digest=D1, tag="v1", at=h(1)),
             ev("push", digest="sha256:" + "9" * 64, at=h(1), usage="blob",
                media_type="application/vnd.oci.image.layer.v1.tar+gzip")], now=NOW)
    w.write([ev("pull", digest=D1, at=h(9))], now=NOW)
    with store.connect() as conn:
        rows = conn.execute(select(manifests.c.digest, manifests.c.first_seen,
                                   manifests.c.media_type, manifests.c.is_index)).all()
    assert rows == [(D1, T0 + h(1), MANIFEST, False)]  # blobs are not manifests


def test_a_tag_only_deploy_gets_the_digest_of_its_time(store: Store) -> None:
    w = EventWriter(store)
    w.write([ev("push", digest=D1, tag="v1", at=h(0)),
             ev("push", digest=D2, tag="v1", at=h(5))], now=NOW)
    w.write([ev("deploy", tag="v1", at=h(2), source="deploy", eid="x"),
             ev("deploy", tag="v1", at=h(6), source="deploy", eid="y"),
             ev("deploy", tag="nope", at=h(6), source="deploy", eid="z")], now=NOW)
    with store.connect() as conn:
        got = dict(conn.execute(select(events.c.source_event_id, events.c.digest)
                                .where(events.c.source == "deploy")).all())
    assert got == {"x": D1, "y": D2, "z": None}
    deploys = {(r[1], r[2]) for r in rollup_rows(store) if r[3] == "deploy"}
    assert deploys == {(D1, "v1"), (D2, "v1"), ("", "nope")}


def test_a_push_and_a_deploy_in_one_batch(store: Store) -> None:
    EventWriter(store).write([ev("deploy", tag="v1", at=h(1), source="deploy", eid="d"),
                              ev("push", digest=D1, tag="v1", at=h(0))], now=NOW)
    with store.connect() as conn:
        assert conn.execute(select(events.c.digest).where(
            events.c.source_event_id == "d")).scalar_one() == D1


def test_a_failing_batch_stores_nothing(store: Store) -> None:
    w = EventWriter(store)
    bad = ev("pull", digest=D2)
    bad.time = datetime(2026, 3, 1)  # naive: the store refuses it
    with pytest.raises(Exception, match="naive"):
        w.write([ev("push", digest=D1, tag="v1"), bad], now=NOW)
    with store.connect() as conn:
        for table in (events, rollups, th, manifests):
            assert conn.execute(select(table)).first() is None


def test_prune_keeps_the_rollups(store: Store) -> None:
    w = EventWriter(store, raw_retention=timedelta(days=30))
    w.write([ev("pull", digest=D1, at=-timedelta(days=40)), ev("pull", digest=D1, at=h(0))],
            now=NOW)
    assert w.prune(T0 + timedelta(days=1)) == 1
    with store.connect() as conn:
        assert len(conn.execute(select(events)).all()) == 1
    assert sum(r[5] for r in rollup_rows(store)) == 2


def test_prune_keeps_deploy_events(store: Store) -> None:
    """The production guardrails read deploy environments from raw deploy events."""
    w = EventWriter(store, raw_retention=timedelta(days=30))
    w.write([ev("deploy", digest=D1, at=-timedelta(days=400)),
             ev("pull", digest=D1, at=-timedelta(days=400))], now=NOW)
    assert w.prune(T0 + timedelta(days=1)) == 1
    with store.connect() as conn:
        assert [r.action for r in conn.execute(select(events))] == ["deploy"]


def test_pod_snapshots_are_stored_once(store: Store) -> None:
    w = EventWriter(store)
    snap = PodSnapshot(source="eu-1", taken_at=T0, pods=2, refs=[
        RunningRef(registry="r.io", repository="shop/api", image=f"r.io/shop/api@{D1}",
                   digest=D1, tag="v1", namespace="shop", pod="p", container="c"),
        RunningRef(registry="r.io", repository="shop/api", image="r.io/shop/api:v2", tag="v2",
                   container_kind="init"),
    ])
    assert w.write_snapshot(snap) == 2
    assert w.write_snapshot(snap) == 2  # a retry
    assert w.write_snapshot(PodSnapshot(source="eu-1", taken_at=T0 + h(1), pods=0)) == 0
    with store.connect() as conn:
        assert len(conn.execute(select(k8s_snapshots)).all()) == 2
        rows = conn.execute(select(running_refs.c.digest, running_refs.c.container_kind)
                            .order_by(running_refs.c.id)).all()
    assert rows == [(D1, "container"), (None, "init")]


def test_concurrent_writers_lose_and_double_nothing(store: Store) -> None:
    """Four writers, overlapping batches (same events, same rollup keys, same tags)."""
    shared = [ev("pull", digest=D1, tag="v1", at=h(i % 5), eid=f"s{i}") for i in range(200)]
    own = {k: [ev("pull", digest=D1, tag="v1", at=h(i % 5), eid=f"{k}-{i}") for i in range(200)]
           for k in range(4)}
    pushes = {k: [ev("push", digest=(D1, D2, D3)[k % 3], tag=f"t{j}", at=h(k), eid=f"p{k}-{j}")
                  for j in range(5)] for k in range(4)}
    errors: list[BaseException] = []

    def run(k: int) -> None:
        w = EventWriter(store)
        try:
            for n in range(0, 200, 50):
                batch = list(reversed(shared[n:n + 50])) if k % 2 else shared[n:n + 50]
                w.write(batch + own[k][n:n + 50] + pushes[k], now=NOW)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    total = 200 + 4 * 200 + 4 * 5
    with store.connect() as conn:
        assert len(conn.execute(select(events.c.id)).all()) == total
    assert sum(r[5] for r in rollup_rows(store)) == total
    # each tag: four pushes at hours 0..3, non-overlapping intervals, the last one open
    for j in range(5):
        got = history(store, f"t{j}")
        assert [r[1] for r in got] == [h(0), h(1), h(2), h(3)]
        assert [r[2] for r in got] == [h(1), h(2), h(3), None]


def test_a_bulk_writer_stores_the_same_and_tunes_sqlite(store: Store) -> None:
    def contents(s: Store) -> tuple[Any, ...]:
        with s.connect() as conn:
            stored = conn.execute(select(
                events.c.source_event_id, events.c.time, events.c.received_at, events.c.digest,
                events.c.tag).order_by(events.c.source_event_id)).all()
        return tuple(stored), rollup_rows(s), history(s)

    batch = [ev("push", digest=D1, tag="v1", eid="p", at=h(1)),
             ev("pull", digest=D1, tag="v1", eid="q", at=h(2)),
             ev("deploy", tag="v1", eid="r", source="deploy", at=h(3)),
             ev("pull", digest=D1, eid="s", at=h(3) + timedelta(microseconds=7))]
    bulk = EventWriter(store, bulk=True)
    assert bulk.write(batch, now=NOW).stored == 4
    stored, rolled, hist = contents(store)
    assert [(r[0], r[1] - T0, r[2], r[3]) for r in stored] == [
        ("p", h(1), NOW, D1), ("q", h(2), NOW, D1), ("r", h(3), NOW, D1),
        ("s", h(3) + timedelta(microseconds=7), NOW, D1)]
    assert sum(r[5] for r in rolled) == 4 and hist == [(D1, h(1), None)]
    if store.dialect == "sqlite":
        # The pooled connection the writer used keeps the bulk-load cache size.
        with store.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -98304  # 96 MiB


def test_a_retried_batch_with_new_events_resolves_the_right_rows(store: Store) -> None:
    """Duplicates and new events mixed in one statement: the new rows are found (SQLite: by
    their rowid range) and only they get a digest from the tag history."""
    w = EventWriter(store)
    first = [ev("push", digest=D1, tag="v1", eid="a"),
             ev("deploy", tag="v1", eid="b", source="deploy", at=h(1))]
    w.write(first, now=NOW)
    later = [ev("push", digest=D2, tag="v1", eid="c", at=h(2)),
             ev("deploy", tag="v1", eid="d", source="deploy", at=h(3))]
    result = w.write([*first, *later, ev("deploy", tag="v1", eid="e", source="deploy",
                                         at=h(1.5))], now=NOW)
    assert (result.stored, result.duplicates) == (3, 2)
    with store.connect() as conn:
        stored = dict(conn.execute(select(events.c.source_event_id, events.c.digest)).all())
    assert stored == {"a": D1, "b": D1, "c": D2, "d": D2, "e": D1}
    assert sum(r[5] for r in rollup_rows(store)) == 5


def test_an_event_in_another_offset_is_rolled_up_on_its_utc_day(store: Store) -> None:
    # 23:30 UTC on 1 March is already 2 March in Kiribati (+14): the day is the UTC one, and
    # first/last_at and the manifest's first_seen are the same instant on both stores.
    kiribati = timezone(timedelta(hours=14))
    at = datetime(2026, 3, 1, 23, 30, 0, 123456, tzinfo=UTC)
    EventWriter(store, bulk=True).write([
        Event(time=at.astimezone(kiribati), source="distribution", source_event_id="k1",
              action="pull", usage="use", repository="shop/api", digest=D1, tag="v1",
              media_type=MANIFEST),
        Event(time=at - h(1), source="distribution", source_event_id="k2", action="pull",
              usage="use", repository="shop/api", digest=D1, tag="v1", media_type=MANIFEST),
    ], now=NOW)
    assert rollup_rows(store) == {(date(2026, 3, 1), D1, "v1", "pull", "use", 2, at - h(1), at)}
    with store.connect() as conn:
        assert conn.execute(select(events.c.time).order_by(events.c.time)).scalars().all() == [
            at - h(1), at]
        assert conn.execute(select(manifests.c.first_seen)).scalar_one() == at - h(1)


def test_a_prepared_batch_is_for_sqlite_only(store: Store) -> None:
    # The ingest's parsing process plans SQLite batches (writer.prepare) away from the store.
    from recommender.collector.writer import prepare
    from recommender.errors import StoreError

    batch = prepare([ev("push", digest=D1, tag="v1"), ev("pull", digest=D1, tag="v1",
                                                          at=h(1))], now=NOW)
    writer = EventWriter(store, bulk=True)
    if store.dialect != "sqlite":
        with pytest.raises(StoreError, match="a prepared batch is for SQLite"):
            writer.write_prepared(batch)
        with store.connect() as conn:
            assert conn.execute(select(events.c.id)).first() is None
        return
    assert writer.write_prepared(batch).stored == 2
    assert writer.write_prepared(batch).duplicates == 2  # the same plan again: nothing new
    assert history(store) == [(D1, timedelta(0), None)]
    assert rollup_rows(store) == {
        (date(2026, 3, 1), D1, "v1", "push", "use", 1, T0, T0),
        (date(2026, 3, 1), D1, "v1", "pull", "use", 1, T0 + h(1), T0 + h(1))}

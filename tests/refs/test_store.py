"""Declared references in the store, on SQLite and PostgreSQL: replacement and resolution."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from recommender.errors import PayloadError
from recommender.reference import registry_hosts
from recommender.refs import (
    DeclaredRef,
    Findings,
    current_references,
    declared_references,
    record,
)
from recommender.store import Store
from recommender.store.tables import declared_refs, tag_history

T0 = datetime(2026, 3, 1, tzinfo=UTC)
A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
HOSTS = registry_hosts("http://reg.local:5000")


def refs(*pairs: tuple[str, str]) -> list[DeclaredRef]:
    found = Findings()
    for location, image in pairs:
        assert found.add(image, location, "kubernetes") is not None
    return found.refs


def tag(store: Store, repository: str, name: str, digest: str, start: datetime,
        end: datetime | None = None) -> None:
    with store.begin() as conn:
        conn.execute(tag_history.insert().values(
            repository=repository, tag=name, digest=digest, valid_from=start, valid_to=end,
            source="push"))


def rows(store: Store) -> int:
    with store.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(declared_refs)).scalar_one())


def test_reference_by_tag_protects_what_the_tag_pointed_to_then(store: Store) -> None:
    tag(store, "team/app", "1.0", A, T0, T0 + timedelta(days=10))
    tag(store, "team/app", "1.0", B, T0 + timedelta(days=10))
    tag(store, "team/app", "latest", C, T0)
    record(store, {"gitops": refs(("deploy/cron.yaml:14", "reg.local:5000/team/app:1.0"),
                                  ("deploy/web.yaml:3", "reg.local:5000/team/app"))},
           at=T0 + timedelta(days=1), hosts=HOSTS)
    with store.connect() as conn:
        early = declared_references(conn, at=T0 + timedelta(days=2))
        late = declared_references(conn, at=T0 + timedelta(days=11))
        before = declared_references(conn, at=T0)
    assert early == {("team/app", A): ["deploy/cron.yaml:14"],
                     ("team/app", C): ["deploy/web.yaml:3"]}  # no tag means latest
    assert late == {("team/app", B): ["deploy/cron.yaml:14"],
                    ("team/app", C): ["deploy/web.yaml:3"]}
    assert before == {}  # nothing was declared yet


def test_reference_by_digest_protects_that_digest(store: Store) -> None:
    # the tag says A, but a pinned digest is what gets pulled
    tag(store, "team/app", "1.0", A, T0)
    record(store, {"ci": refs(("k.yaml:9", f"reg.local:5000/team/app:1.0@{B}"))}, at=T0,
           hosts=HOSTS)
    with store.connect() as conn:
        assert declared_references(conn, at=T0 + timedelta(hours=1)) == {
            ("team/app", B): ["k.yaml:9"]}


def test_a_removed_line_stops_protecting(store: Store) -> None:
    first = refs(("a.yaml:1", f"reg.local:5000/team/app@{A}"),
                 ("b.yaml:2", f"reg.local:5000/team/app@{B}"))
    [r1] = record(store, {"gitops": first}, at=T0, hosts=HOSTS)
    assert (r1.added, r1.removed, r1.unchanged) == (2, 0, 0)
    [r2] = record(store, {"gitops": first[:1]}, at=T0 + timedelta(days=1), hosts=HOSTS)
    assert (r2.added, r2.removed, r2.unchanged) == (0, 1, 1)
    [r3] = record(store, {"gitops": first[:1]}, at=T0 + timedelta(days=2), hosts=HOSTS)
    assert (r3.added, r3.removed, r3.unchanged) == (0, 0, 1)
    assert rows(store) == 2  # an unchanged set writes nothing
    with store.connect() as conn:
        then = declared_references(conn, at=T0 + timedelta(hours=12))
        now = declared_references(conn, at=T0 + timedelta(days=3))
    assert set(then) == {("team/app", A), ("team/app", B)}  # history stays answerable
    assert set(now) == {("team/app", A)}


def test_sources_are_independent_and_locations_merge(store: Store) -> None:
    image = f"reg.local:5000/team/app@{A}"
    record(store, {"repo-a": refs(("x.yaml:1", image)), "repo-b": refs(("y.yaml:7", image))},
           at=T0, hosts=HOSTS)
    record(store, {"repo-a": []}, at=T0 + timedelta(days=1), hosts=HOSTS)
    with store.connect() as conn:
        assert declared_references(conn, at=T0) == {("team/app", A): ["x.yaml:1", "y.yaml:7"]}
        assert declared_references(conn, at=T0, with_source=True) == {
            ("team/app", A): ["repo-a: x.yaml:1", "repo-b: y.yaml:7"]}
        assert declared_references(conn, at=T0 + timedelta(days=2)) == {
            ("team/app", A): ["y.yaml:7"]}


def test_other_registries_are_listed_but_protect_nothing(store: Store) -> None:
    record(store, {"s": refs(("Dockerfile:1", "python:3.12"),
                             ("Dockerfile:9", f"ghcr.io/org/tool@{A}"))}, at=T0, hosts=HOSTS)
    with store.connect() as conn:
        assert declared_references(conn, at=T0) == {}
        listed = current_references(conn, at=T0)
    assert [(r["image"], r["repository"]) for r in listed] == [
        ("python:3.12", None), (f"ghcr.io/org/tool@{A}", None)]


def test_without_configured_hosts_every_reference_counts(store: Store) -> None:
    record(store, {"s": refs(("Dockerfile:9", f"ghcr.io/org/tool@{A}"))}, at=T0)
    with store.connect() as conn:
        assert declared_references(conn, at=T0) == {("org/tool", A): ["Dockerfile:9"]}


def test_an_earlier_time_than_recorded_is_refused_and_changes_nothing(store: Store) -> None:
    record(store, {"s": refs(("a:1", f"reg.local:5000/x@{A}"))}, at=T0, hosts=HOSTS)
    with pytest.raises(PayloadError, match="later than"):
        record(store, {"s": []}, at=T0 - timedelta(seconds=1), hosts=HOSTS)
    with store.connect() as conn:
        assert declared_references(conn, at=T0 + timedelta(days=1)) == {("x", A): ["a:1"]}


def test_several_sources_are_recorded_all_or_nothing(store: Store) -> None:
    with pytest.raises(PayloadError, match="source must not be empty"):
        record(store, {"good": refs(("a:1", f"reg.local:5000/x@{A}")), " ": []}, at=T0,
               hosts=HOSTS)
    assert rows(store) == 0


def test_duplicates_within_a_set_are_stored_once(store: Store) -> None:
    same = refs(("a:1", "reg.local:5000/x:1"), ("a:1", "reg.local:5000/x:1"))
    [result] = record(store, {"s": same}, at=T0, hosts=HOSTS)
    assert result.added == 1 and rows(store) == 1


def test_concurrent_replacements_of_one_source_store_one_set(store: Store) -> None:
    import threading

    wanted = refs(*[(f"k.yaml:{i}", f"reg.local:5000/team/app{i}:1") for i in range(50)])
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def one(n: int) -> None:
        try:
            barrier.wait()
            record(store, {"gitops": wanted}, at=T0 + timedelta(seconds=n), hosts=HOSTS)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # a writer that came later in time than another may be refused; none may duplicate rows
    assert all(isinstance(e, PayloadError) for e in errors), errors
    with store.connect() as conn:
        open_rows = conn.execute(select(func.count()).select_from(declared_refs)
                                 .where(declared_refs.c.valid_to.is_(None))).scalar_one()
    assert open_rows == 50

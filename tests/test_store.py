from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from recommender.errors import StoreError
from recommender.store import Store, tables


def test_migrated_schema_has_every_table(store: Store) -> None:
    names = set(store.table_names())
    assert set(tables.metadata.tables) <= names
    store.check_schema()


def test_times_round_trip_as_aware_utc(store: Store) -> None:
    t = datetime(2026, 3, 9, 14, 44, 26, 402973, tzinfo=timezone(timedelta(hours=-8)))
    with store.begin() as conn:
        conn.execute(
            tables.events.insert(),
            dict(time=t, received_at=t, source="s", source_event_id="1", action="pull",
                 usage="use", repository="r"),
        )
        got = conn.execute(select(tables.events.c.time)).scalar_one()
    assert got == t and got.tzinfo is not None and got.utcoffset() == timedelta(0)


def test_naive_time_is_refused(store: Store) -> None:
    with pytest.raises(Exception, match="naive datetime"), store.begin() as conn:
        conn.execute(
            tables.events.insert(),
            dict(time=datetime(2026, 1, 1), received_at=datetime.now(UTC), source="s",
                 source_event_id="1", action="pull", usage="use", repository="r"),
        )


def test_unmigrated_store_is_reported(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = Store.from_url(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(StoreError, match="tagwarden migrate"):
        s.check_schema()


def test_migrations_match_the_tables(store: Store) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with store.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), tables.metadata)
    assert diff == [], "run `make migration` after changing recommender/store/tables.py"

"""Write store rows directly (as the collector and a scan would) so model tests control history.

This is test data, not a fake: the rows land in the real tables of a real store.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from itertools import count

from sqlalchemy import Connection, insert, select, update

from recommender.store import Store
from recommender.store import tables as t

T0 = datetime(2026, 1, 1, tzinfo=UTC)
_ids = count(1)


def at(day: float) -> datetime:
    """Day offsets from T0 (fractions allowed)."""
    return T0 + timedelta(days=day)


def digest(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


class History:
    """Records pushes, pulls, deploys and pod snapshots for one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _conn(self) -> Connection:
        return self.store.engine.connect()

    def push(self, repo: str, name: str, when: float, *tags: str, size: int = 10_000_000,
             is_index: bool = False, subject: str | None = None,
             referrer_kind: str | None = None) -> str:
        d = digest(f"{repo}/{name}")
        with self.store.begin() as conn:
            conn.execute(insert(t.manifests).values(
                repository=repo, digest=d, first_seen=at(when), total_bytes=size, size=1000,
                is_index=is_index, subject=subject, referrer_kind=referrer_kind))
            for tag in tags:
                self._retag(conn, repo, tag, d, when)
            self._rollup(conn, repo, d, when, "push", "use", 1, tag=tags[0] if tags else "")
        return d

    def tag(self, repo: str, tag: str, d: str, when: float) -> None:
        with self.store.begin() as conn:
            self._retag(conn, repo, tag, d, when)

    def _retag(self, conn: Connection, repo: str, tag: str, d: str, when: float) -> None:
        th = t.tag_history
        conn.execute(update(th).where(th.c.repository == repo, th.c.tag == tag,
                                      th.c.valid_to.is_(None)).values(valid_to=at(when)))
        conn.execute(insert(th).values(repository=repo, tag=tag, digest=d, valid_from=at(when),
                                       source="push"))

    def untag(self, repo: str, tag: str, when: float) -> None:
        th = t.tag_history
        with self.store.begin() as conn:
            conn.execute(update(th).where(th.c.repository == repo, th.c.tag == tag,
                                          th.c.valid_to.is_(None)).values(valid_to=at(when)))

    def child(self, repo: str, parent: str, child: str) -> None:
        with self.store.begin() as conn:
            conn.execute(insert(t.manifest_children).values(repository=repo, parent=parent,
                                                            child=child))

    def delete(self, repo: str, d: str, when: float) -> None:
        m = t.manifests
        with self.store.begin() as conn:
            conn.execute(update(m).where(m.c.repository == repo, m.c.digest == d)
                         .values(deleted_at=at(when)))

    def pull(self, repo: str, d: str, when: float, n: int = 1, usage: str = "use") -> None:
        with self.store.begin() as conn:
            self._rollup(conn, repo, d, when, "pull", usage, n)

    def _rollup(self, conn: Connection, repo: str, d: str, when: float, action: str,
                usage: str, n: int, tag: str = "") -> None:
        r = t.rollups
        moment = at(when)
        day = moment.date()
        row = conn.execute(select(r.c.count).where(
            r.c.day == day, r.c.repository == repo, r.c.digest == d, r.c.tag == tag,
            r.c.action == action, r.c.usage == usage)).first()
        if row is None:
            conn.execute(insert(r).values(day=day, repository=repo, digest=d, tag=tag,
                                          action=action, usage=usage, count=n, first_at=moment,
                                          last_at=moment))
        else:
            conn.execute(update(r).where(
                r.c.day == day, r.c.repository == repo, r.c.digest == d, r.c.tag == tag,
                r.c.action == action, r.c.usage == usage).values(count=row[0] + n,
                                                                   last_at=moment))

    def deploy(self, repo: str, d: str, when: float, environment: str = "production") -> None:
        with self.store.begin() as conn:
            conn.execute(insert(t.events).values(
                time=at(when), received_at=at(when), source="deploy",
                source_event_id=f"dep-{next(_ids)}", action="deploy", usage="use",
                repository=repo, digest=d, environment=environment))
            self._rollup(conn, repo, d, when, "deploy", "use", 1)

    def pods(self, when: float, refs: list[tuple[str, str]], source: str = "prod-eu") -> None:
        with self.store.begin() as conn:
            sid = conn.execute(insert(t.k8s_snapshots).values(
                source=source, taken_at=at(when), pods=len(refs)).returning(
                t.k8s_snapshots.c.id)).scalar_one()
            for repo, d in refs:
                conn.execute(insert(t.running_refs).values(
                    snapshot_id=sid, registry="reg.example", repository=repo, digest=d,
                    image=f"reg.example/{repo}@{d}", namespace="default", pod="p"))

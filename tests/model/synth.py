"""A small seeded history written straight into the store's tables, for model tests.

Three rhythms, enough for the model to have something to learn and fast to write:
CI builds (pulled for a few days, then never again), releases (deployed to production and
pulled while current, the previous one sometimes rolled back to), cron images (their tag
pulled on a long period). The full fleet generator (``recommender.fleet``) is used by the
quality figures; this one keeps unit tests under a few seconds.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta

from sqlalchemy import insert

from recommender.store import Store
from recommender.store import tables as t

from .builders import T0, at, digest


def generate(store: Store, *, seed: int = 1, days: int = 240, ci_repos: int = 4,
             release_repos: int = 3, cron_repos: int = 2) -> None:
    rng = random.Random(seed)
    manifests: list[dict[str, object]] = []
    tags: list[dict[str, object]] = []
    pulls: dict[tuple[object, ...], list[float]] = defaultdict(list)
    deploys: list[dict[str, object]] = []

    def push(repo: str, name: str, when: float, tag: str, size: int) -> str:
        d = digest(f"{repo}/{name}")
        manifests.append({"repository": repo, "digest": d, "first_seen": at(when),
                          "total_bytes": size, "size": 900, "is_index": False})
        for row in tags:
            if row["repository"] == repo and row["tag"] == tag and row["valid_to"] is None:
                row["valid_to"] = at(when)
        tags.append({"repository": repo, "tag": tag, "digest": d, "valid_from": at(when),
                     "valid_to": None, "source": "push"})
        return d

    for r in range(ci_repos):
        repo = f"ci/app{r}"
        for day in range(days):
            for k in range(rng.randint(1, 3)):
                when = day + rng.random() * 0.9
                d = push(repo, f"{day}-{k}", when, f"sha-{rng.getrandbits(28):07x}",
                         rng.randint(50, 400) * 1_000_000)
                for _ in range(rng.randint(1, 4)):
                    pulls[(repo, d)].append(when + rng.random() * 3)
                if rng.random() < 0.02:  # a rare late re-pull (a bisect)
                    pulls[(repo, d)].append(when + 20 + rng.random() * 60)
    for r in range(release_repos):
        repo = f"rel/svc{r}"
        current: list[str] = []
        for n, day in enumerate(range(3, days, 14)):
            d = push(repo, f"v{n}", day + 0.3, f"v1.{n}.0", rng.randint(100, 300) * 1_000_000)
            deploys.append({"repository": repo, "digest": d, "time": at(day + 0.5),
                            "environment": "production"})
            current.append(d)
            for x in range(14):
                pulls[(repo, d)].append(day + x + rng.random())
            if len(current) > 1 and rng.random() < 0.3:  # a rollback weeks later
                pulls[(repo, current[-2])].append(day + 10 + rng.random() * 30)
    for r in range(cron_repos):
        repo = f"cron/job{r}"
        period = rng.choice([30, 45, 60])
        d = push(repo, "only", 1, "stable-job", 80_000_000)
        for day in range(2, days + 200, period):
            pulls[(repo, d)].append(day + rng.random())

    rollups: dict[tuple[object, ...], dict[str, object]] = {}
    horizon_end = days + 200
    for (repo, d), times in pulls.items():
        for when in times:
            if when > horizon_end:
                continue
            moment = at(when)
            key = (moment.date(), repo, d)
            row = rollups.get(key)
            if row is None:
                rollups[key] = {"day": moment.date(), "repository": repo, "digest": d, "tag": "",
                                "action": "pull", "usage": "use", "count": 1,
                                "first_at": moment, "last_at": moment}
            else:
                row["count"] = int(row["count"]) + 1  # type: ignore[call-overload]
                row["first_at"] = min(row["first_at"], moment)  # type: ignore[type-var]
                row["last_at"] = max(row["last_at"], moment)  # type: ignore[type-var]
    events = [{**dep, "received_at": dep["time"], "source": "deploy",
               "source_event_id": f"d{i}", "action": "deploy", "usage": "use"}
              for i, dep in enumerate(deploys)]
    with store.begin() as conn:
        conn.execute(insert(t.manifests), manifests)
        conn.execute(insert(t.tag_history), tags)
        conn.execute(insert(t.rollups), list(rollups.values()))
        conn.execute(insert(t.events), events)


END = T0 + timedelta(days=240)

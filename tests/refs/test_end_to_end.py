"""End to end: a declared reference keeps an old, never-pulled image; removing it frees it.

Everything goes through the user's paths: registry push notifications through ``tagwarden
ingest distribution``, a checkout through ``tagwarden ingest refs``, then the recommender's
``suggest`` (rules-only mode: no model is trained), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from recommender.cli import main
from recommender.config import load
from recommender.inventory import list_inventory
from recommender.recommend import Suggestion, suggest
from recommender.store import open_store

T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)  # every instant below stays in the past
OLD = "sha256:" + "1" * 64
NEW = "sha256:" + "2" * 64
CRONJOB = """\
apiVersion: batch/v1
kind: CronJob
metadata:
  name: yearly-invoices
spec:
  schedule: "0 2 1 1 *"
  suspend: true
  jobTemplate:
    spec:
      template:
        spec:
          containers:
            - name: invoices
              image: reg.local:5000/billing/invoices:1.0
"""


def push(n: int, tag: str, digest: str, when: datetime) -> str:
    return json.dumps({"events": [{
        "id": f"push-{n}", "timestamp": when.isoformat().replace("+00:00", "Z"),
        "action": "push",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                   "size": 1234, "repository": "billing/invoices", "tag": tag},
        "request": {"method": "PUT", "useragent": "docker/24.0.7 go/go1.20.10",
                    "addr": "10.0.0.9:40000"},
        "actor": {"name": "ci"},
    }]})


def item(items: list[Suggestion], digest: str) -> Suggestion:
    return next(s for s in items if s.digest == digest)


def test_a_declared_reference_keeps_an_old_never_pulled_image(store_url: str,
                                                              tmp_path: Path) -> None:
    config_file = tmp_path / "tagwarden.toml"
    config_file.write_text(
        '[registry]\nurl = "http://reg.local:5000"\n\n'
        # keep only the newest version, so nothing but the reference keeps 1.0
        '[[policy]]\nrepositories = ["*"]\nkeep_other = 1\nkeep_production = 1\n'
        'protected_tags = []\n'
    )
    base = ["--config", str(config_file), "--db", store_url]
    pushes = tmp_path / "pushes.jsonl"
    pushes.write_text(push(1, "1.0", OLD, T0) + "\n"
                      + push(2, "2.0", NEW, T0 + timedelta(days=1)) + "\n")
    assert main([*base, "ingest", "distribution", str(pushes)]) == 0

    checkout = tmp_path / "gitops"
    (checkout / "jobs").mkdir(parents=True)
    (checkout / "jobs" / "invoices.yaml").write_text(CRONJOB)
    declared_at = T0 + timedelta(days=400)
    assert main([*base, "ingest", "refs", str(checkout), "--source", "gitops",
                 "--at", declared_at.isoformat()]) == 0

    config = load(config_file, env={}, overrides={"store.url": store_url})
    store = open_store(store_url)
    try:
        kept = suggest(store, config, now=declared_at + timedelta(hours=1), include_all=True)
        old = item(kept, OLD)
        assert old.suggested is False
        assert old.blocked_by == ["referenced: jobs/invoices.yaml:14"]
        assert item(kept, NEW).suggested is False  # the newest version, kept by keep_other
        with store.connect() as conn:
            listed = {r["digest"]: r for r in list_inventory(conn, now=declared_at)}
        assert listed[OLD]["referenced"] == ["gitops: jobs/invoices.yaml:14"]
        assert listed[NEW]["referenced"] == []

        # The CronJob moves to 2.0: the 1.0 line is gone and the next ingest stops protecting it.
        (checkout / "jobs" / "invoices.yaml").write_text(CRONJOB.replace("invoices:1.0",
                                                                         "invoices:2.0"))
        removed_at = declared_at + timedelta(days=1)
        assert main([*base, "ingest", "refs", str(checkout), "--source", "gitops",
                     "--at", removed_at.isoformat()]) == 0
        freed = suggest(store, config, now=removed_at + timedelta(hours=1), include_all=True)
        old = item(freed, OLD)
        assert old.blocked_by == []
        assert old.suggested is True
        new = item(freed, NEW)
        assert new.suggested is False
        assert "referenced: jobs/invoices.yaml:14" in new.blocked_by
        with store.connect() as conn:
            listed = {r["digest"]: r for r in list_inventory(conn, now=removed_at)}
        assert listed[OLD]["referenced"] == []
        assert listed[NEW]["referenced"] == ["gitops: jobs/invoices.yaml:14"]
    finally:
        store.dispose()

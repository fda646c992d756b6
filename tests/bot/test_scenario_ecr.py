"""The newcomer's story on Amazon ECR (moto's server behind tests/support/ecr): images pushed
with ``put_image`` (single manifests, an index with two children, a signature with a
``subject``), ``scan``, ``suggest``, ``suggest --post`` to Slack, a signed Approve click,
``execute`` after the cooling-off. The approved images are gone from ``describe_images``, the
index's children went after it (ECR refuses them while it lists them), the protected release
and the image pulled since stayed; the audit chain verifies.

Pulls after the approval reach tagwarden both ways: one as a CloudTrail ``BatchGetImage``
record by tag, from a trail's gzipped file (``ingest cloudtrail``), resolved to its digest
through the tag history; one only as ECR's ``lastRecordedPullTime``, read by the next scan.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.app import create_bolt_app, slack_routes
from bot.fakeslack import FakeSlack
from recommender import decisions
from recommender.cli import main
from recommender.server import build_app
from recommender.store import open_store
from recommender.store.tables import audit_log
from recommender.timeutil import utcnow
from tests.support.ecr import ACCOUNT, REGION, EcrServer
from tests.support.live_server import LiveServer

from .helpers import Clock, click_payload, form, make_config, post_signed

POLICY = """
[model]
dir = "{models}"
horizon = "1d"

[registry]
kind = "ecr"
region = "{region}"
endpoint_url = "{url}"

[[policy]]
repositories = ["*"]
protected_tags = ["latest", "v*"]
keep_production = 0
keep_other = 0
min_age = "0s"
keep_deployed_within = "0s"
"""


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        yield fake


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _trail_pull(event_id: str, when: datetime, repository: str, tag: str) -> dict[str, object]:
    """A CloudTrail record of a node pulling ``repository:tag``, as a trail writes it."""
    role = f"arn:aws:sts::{ACCOUNT}:assumed-role/eks-node/i-0abc"
    return {
        "eventVersion": "1.08", "eventTime": _iso(when).split(".")[0] + "Z",
        "userIdentity": {"type": "AssumedRole", "arn": role, "accountId": ACCOUNT},
        "eventSource": "ecr.amazonaws.com", "eventName": "BatchGetImage", "awsRegion": REGION,
        "sourceIPAddress": "10.0.12.34", "userAgent": "containerd/v1.7.11",
        "requestParameters": {"repositoryName": repository, "registryId": ACCOUNT,
                              "imageIds": [{"imageTag": tag}]},
        "responseElements": None, "requestID": f"req-{event_id}", "eventID": event_id,
        "readOnly": True, "eventType": "AwsApiCall", "managementEvent": True,
        "recipientAccountId": ACCOUNT, "eventCategory": "Management",
    }


def test_first_week_on_ecr(ecr: EcrServer, slack: FakeSlack, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    config = make_config(tmp_path, slack.api_url, store_url=url, extra=POLICY.format(
        models=tmp_path / "models", region=REGION, url=ecr.url))
    path = str(tmp_path / "tagwarden.toml")

    def cli(*args: str) -> str:
        code = main(["--config", path, "--db", url, *args])
        out = capsys.readouterr()
        assert code == 0, out.err
        return out.out

    ecr.create_repository("payments/api")
    ecr.create_repository("payments/web")
    builds = [ecr.push_image("payments/api", f"build-{i}", seed=f"b{i}",
                             layer_sizes=(2000 + i,)) for i in range(2)]
    pulled_later = ecr.push_image("payments/api", "build-9", seed="b9")
    trailed_later = ecr.push_image("payments/api", "build-8", seed="b8")
    amd = ecr.push_image("payments/api", None, seed="amd")
    arm = ecr.push_image("payments/api", None, seed="arm")
    multi = ecr.push_index("payments/api", "build-multi", [(amd, "linux/amd64"),
                                                           (arm, "linux/arm64")])
    signature = ecr.push_signature("payments/api", multi)
    release = ecr.push_image("payments/api", "v1.0.0", seed="rel", layer_sizes=(4000,))
    latest = ecr.push_image("payments/web", "latest", seed="web")
    cli("scan")
    now = utcnow() + timedelta(days=3)

    listed = json.loads(cli("suggest", "--now", _iso(now), "--all", "--format", "json"))
    verdict = {i["digest"]: i for i in listed}
    doomed = [b.digest for b in builds] + [pulled_later.digest, trailed_later.digest,
                                           multi.digest]
    assert all(verdict[d]["suggested"] for d in doomed)
    for kept in (release, latest):
        assert not verdict[kept.digest]["suggested"]
        assert any("protected tag" in r for r in verdict[kept.digest]["blocked_by"])
    assert all(verdict[b.digest]["bytes"] for b in builds)  # sizes from the manifests

    # Two batches: the numbered builds, and the multi-platform build.
    assert "posted 2 batches (2 new)" in cli("suggest", "--now", _iso(now), "--post")
    reader = open_store(url, migrate_schema=False)
    try:
        posted = decisions.list_batches(reader)
    finally:
        reader.dispose()
    assert set(doomed) <= {i.digest for b in posted for i in b.items}

    clock = Clock(now + timedelta(minutes=5))
    store = open_store(url, migrate_schema=False)
    server = LiveServer(build_app(config, store, clock=clock, routes=slack_routes(
        create_bolt_app(config, store, clock=clock)))).start()
    try:
        for batch in posted:
            body = form(click_payload("tw_approve", batch.id,
                                      response_url=slack.response_url()))
            assert post_signed(f"{server.url}/slack/events", body).status_code == 200
            slack.wait_for("chat.update")
    finally:
        server.stop()
        store.dispose()

    # Nodes pull build-8 and build-9 after the approval: build-8 in the trail's file,
    # build-9 only in ECR's lastRecordedPullTime, which the next scan reads.
    trail = tmp_path / f"{ACCOUNT}_CloudTrail_{REGION}_20261206T0000Z_x.json.gz"
    trail.write_bytes(gzip.compress(json.dumps({"Records": [_trail_pull(
        "0c6f3c1e-0000-4000-8000-000000000001", clock() + timedelta(hours=1),
        "payments/api", "build-8")]}).encode()))
    assert "stored 1," in cli("ingest", "cloudtrail", "--now", _iso(clock() + timedelta(hours=3)),
                             str(trail))
    ecr.record_pull("payments/api", pulled_later.digest, clock() + timedelta(hours=2))
    cli("scan")

    early = cli("execute", "--now", _iso(clock() + timedelta(hours=23)))
    assert "nothing due" in early
    assert set(doomed) <= ecr.digests("payments/api")

    done = cli("execute", "--now", _iso(clock() + timedelta(hours=25)))
    remaining = ecr.digests("payments/api")
    for gone in [b.digest for b in builds] + [multi.digest, amd.digest, arm.digest,
                                              signature.digest]:
        assert gone not in remaining, done
    assert remaining == {release.digest, pulled_later.digest, trailed_later.digest}
    assert ecr.digests("payments/web") == {latest.digest}
    assert "no garbage-collection step" in done  # the forecast: reclaimed at once
    assert "docker-registry garbage-collect" not in done

    reader = open_store(url, migrate_schema=False)
    try:
        by_digest = {i.digest: i for b in decisions.list_batches(reader) for i in b.items}
        for kept_item in (pulled_later, trailed_later):
            assert by_digest[kept_item.digest].state == "skipped"
            assert "used since the suggestion" in (by_digest[kept_item.digest].skipped_reason
                                                   or "")
        with reader.connect() as conn:
            deleted = [json.loads(data)["digest"] for data in conn.execute(
                select(audit_log.c.data).where(audit_log.c.kind == "item.deleted")
                .order_by(audit_log.c.seq)).scalars()]
    finally:
        reader.dispose()
    # The index went before its platforms (ECR would have refused them otherwise).
    assert deleted.index(multi.digest) < deleted.index(amd.digest)
    assert deleted.index(multi.digest) < deleted.index(arm.digest)
    assert "audit log intact" in cli("audit", "verify")

"""Event times no registry could have sent: before 2013, or more than a day ahead of the clock.

Refused at every entrance (each HTTP source, pod lists, file ingest), with the field named,
and nothing stored: one sender with a wrong clock must not poison the rollups for ever.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from recommender.cli import main
from recommender.collector import deploy, distribution, harbor
from recommender.collector.app import Collector
from recommender.errors import PayloadError
from recommender.server import build_app
from recommender.store import Store, open_store, tables
from recommender.usage import Classifier
from tests.collector.test_app import AUTH, DIGEST, V2, count, make_config
from tests.support.live_server import LiveServer

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CLASSIFIER = Classifier()
# RFC 3339 times from broken clocks, and the same in Distribution's own 30-character form
# (which takes the fast path).
ABSURD = ["0001-01-01T00:00:00Z", "1900-01-01T00:00:00Z", "1970-01-01T00:00:00Z",
          "2012-12-31T23:59:59Z", "3026-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
          "2026-03-02T12:00:01Z"]  # a day and a second ahead of NOW
ABSURD_NS = ["0001-01-01T00:00:00.000000000Z", "1970-01-01T00:00:00.000000000Z",
             "3026-01-01T00:00:00.000000000Z", "9999-12-31T23:59:59.999999999Z",
             "2026-03-02T12:00:01.000000000Z"]
PLAUSIBLE = ["2013-01-01T00:00:00Z", "2026-03-02T11:59:59.000000000Z"]


def distribution_doc(stamp: Any, n: int = 1) -> dict[str, Any]:
    return {"events": [{
        "id": f"evt-{n}", "timestamp": stamp, "action": "pull",
        "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": DIGEST,
                   "size": 708, "repository": "shop/web", "tag": "v1"},
        "request": {"method": "GET", "useragent": "containerd/1.7.2", "addr": "10.0.0.1:5"},
    }]}


def harbor_default(occur_at: Any) -> dict[str, Any]:
    return {"type": "PULL_ARTIFACT", "occur_at": occur_at, "operator": "alice",
            "event_data": {"resources": [{"digest": DIGEST, "tag": "v1"}],
                           "repository": {"repo_full_name": "shop/web"}}}


def harbor_cloud(time: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": "c-1", "type": "harbor.artifact.pulled", "time": time,
            "operator": "bob", "data": {"resources": [{"digest": DIGEST, "tag": "v1"}],
                                        "repository": {"repo_full_name": "shop/web"}}}


def deploy_doc(stamp: Any) -> dict[str, Any]:
    return {"timestamp": stamp, "image": f"reg.example.com/shop/web:v1@{DIGEST}",
            "environment": "production"}


def _unix(text: str) -> int:
    return int(datetime.fromisoformat(text[:19] + "+00:00").timestamp())


# --- the parsers -------------------------------------------------------------------------------


@pytest.mark.parametrize("stamp", ABSURD + ABSURD_NS)
def test_every_parser_refuses_an_absurd_time_naming_the_field(stamp: str) -> None:
    latest = NOW + timedelta(days=1)
    cases = [
        (lambda: distribution.parse_envelope(distribution_doc(stamp), CLASSIFIER,
                                             latest=latest), "events[0].timestamp"),
        (lambda: distribution.parse_envelope_line(orjson.dumps(distribution_doc(stamp)),
                                                  CLASSIFIER, latest=latest),
         "events[0].timestamp"),
        (lambda: harbor.parse_webhook(harbor_cloud(stamp), CLASSIFIER, latest=latest), "time"),
        (lambda: harbor.parse_webhook(harbor_default(_unix(stamp)), CLASSIFIER, latest=latest),
         "occur_at"),
        (lambda: deploy.parse_deploys([deploy_doc(stamp)], latest=latest), "[0].timestamp"),
    ]
    for parse, where in cases:
        with pytest.raises(PayloadError) as caught:
            parse()
        assert caught.value.detail["where"] == where
        assert caught.value.message.startswith(f"{where}: ")
        assert "the sender's clock is wrong" in caught.value.message


def test_the_era_holds_without_a_latest_time_and_plausible_times_pass() -> None:
    with pytest.raises(PayloadError, match="before 2013-01-01"):
        distribution.parse_envelope_line(
            orjson.dumps(distribution_doc("1970-01-01T00:00:00.000000000Z")), CLASSIFIER)
    latest = NOW + timedelta(days=1)
    for stamp in PLAUSIBLE:
        (event,) = distribution.parse_envelope_line(orjson.dumps(distribution_doc(stamp)),
                                                    CLASSIFIER, latest=latest)
        assert event.time <= latest


# --- the HTTP endpoints, with the collector's clock injected ----------------------------------


@pytest.fixture
def client(sqlite_store: Store) -> Iterator[httpx.Client]:
    config = make_config()
    collector = Collector(config, sqlite_store, clock=lambda: NOW)
    server = LiveServer(build_app(config, sqlite_store, collector=collector)).start(timeout=60)
    try:
        with httpx.Client(base_url=server.url, timeout=10) as c:
            yield c
    finally:
        server.stop()


def test_each_endpoint_answers_400_naming_the_field_and_stores_nothing(
    client: httpx.Client, sqlite_store: Store,
) -> None:
    json_headers = {**AUTH, "Content-Type": "application/json"}
    for stamp in ABSURD + ABSURD_NS:
        for path, doc, headers, where in [
            ("/v1/events/distribution", distribution_doc(stamp), {**AUTH, "Content-Type": V2},
             "events[0].timestamp"),
            ("/v1/events/harbor", harbor_cloud(stamp), json_headers, "time"),
            ("/v1/events/harbor", harbor_default(_unix(stamp)), json_headers, "occur_at"),
            ("/v1/events/deploy", deploy_doc(stamp), json_headers, "timestamp"),
        ]:
            r = client.post(path, content=orjson.dumps(doc), headers=headers)
            assert r.status_code == 400, (path, stamp, r.text)
            assert r.json()["where"] == where, (path, stamp)
            assert r.json()["error"].startswith(f"{where}: "), r.text
        r = client.post("/v1/k8s/pods", params={"source": "eu-1", "at": stamp},
                        content=b'{"kind": "List", "items": []}', headers=json_headers)
        assert r.status_code == 400, (stamp, r.text)
        assert r.json()["where"] == "query.at"
    assert count(sqlite_store) == 0
    assert count(sqlite_store, tables.k8s_snapshots) == 0
    # A day's skew is allowed: a sender's clock may be a time zone off.
    r = client.post("/v1/events/distribution", headers={**AUTH, "Content-Type": V2},
                    content=orjson.dumps(distribution_doc("2026-03-02T11:00:00.000000000Z")))
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert count(sqlite_store) == 1


# --- file ingest: later than the command's --now is a bad line ----------------------------------


def test_file_ingest_rejects_lines_before_2013_or_after_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path / 's.db'}"
    lines = [orjson.dumps(distribution_doc("2026-02-28T10:00:00.123456789Z", 1)),
             orjson.dumps(distribution_doc("0001-01-01T00:00:00.000000000Z", 2)),
             orjson.dumps(distribution_doc("2026-03-01T12:00:01.000000000Z", 3)),
             orjson.dumps(distribution_doc("9999-12-31T23:59:59Z", 4)),
             orjson.dumps(distribution_doc("2026-03-01T11:59:59.000000000Z", 5))]
    (tmp_path / "d.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    # A file, so it is parsed in the second process (the fast path of msgspec's structs).
    code = main(["--db", db, "ingest", "distribution", "d.jsonl", "--now", NOW.isoformat()])
    out, err = capsys.readouterr()
    assert code == 1
    assert out.strip() == "read 2, stored 2, duplicates 0, rejected 3 (lines 2, 3, 4)"
    assert "line 2: events[0].timestamp: 0001-01-01T00:00:00+00:00 is before 2013-01-01" in err
    assert ("line 3: events[0].timestamp: 2026-03-01T12:00:01+00:00 is later than "
            "2026-03-01T12:00:00+00:00") in err  # a second after --now: no skew allowed
    assert "line 4: events[0].timestamp: 9999-12-31T23:59:59+00:00 is later than" in err

    (tmp_path / "h.jsonl").write_bytes(orjson.dumps(harbor_default(0)) + b"\n")
    (tmp_path / "p.jsonl").write_bytes(orjson.dumps(deploy_doc("3026-01-01T00:00:00Z")) + b"\n")
    assert main(["--db", db, "ingest", "harbor", "h.jsonl", "--now", NOW.isoformat()]) == 1
    assert "line 1: occur_at: 1970-01-01T00:00:00+00:00 is before 2013" in capsys.readouterr().err
    assert main(["--db", db, "ingest", "deploys", "p.jsonl"]) == 1  # --now: the clock
    assert "line 1: timestamp: 3026-01-01T00:00:00+00:00 is later than" in \
        capsys.readouterr().err
    store = open_store(db)
    try:
        assert count(store) == 2
    finally:
        store.dispose()


def test_k8s_ingest_refuses_a_snapshot_time_out_of_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    db = f"sqlite:///{tmp_path / 's.db'}"
    pods = {"kind": "List", "items": []}
    (tmp_path / "pods.json").write_bytes(orjson.dumps(pods))
    assert main(["--db", db, "ingest", "k8s", "pods.json", "--at", "1970-01-01T00:00:00Z"]) == 1
    assert capsys.readouterr().err.startswith("error: --at: 1970-01-01T00:00:00+00:00 is before")
    lines = [orjson.dumps({"source": "eu-1", "taken_at": t, "list": pods})
             for t in ("2026-02-01T00:00:00Z", "1900-01-01T00:00:00Z", "2026-03-05T00:00:00Z")]
    (tmp_path / "snap.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    assert main(["--db", db, "ingest", "k8s", "snap.jsonl", "--now", NOW.isoformat()]) == 1
    out, err = capsys.readouterr()
    assert "rejected 2 (lines 2, 3)" in out
    assert "line 2: taken_at: 1900-01-01T00:00:00+00:00 is before 2013-01-01" in err
    assert "line 3: taken_at: 2026-03-05T00:00:00+00:00 is later than" in err

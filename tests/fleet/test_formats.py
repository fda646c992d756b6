"""The fleet's files parse with the collector's own parsers, and classify as intended."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from recommender.collector import deploy, distribution, k8s
from recommender.collector.writer import EventWriter
from recommender.fleet import FleetSpec, generate
from recommender.store import Store, tables
from recommender.timeutil import parse_time
from recommender.usage import Classifier

from .conftest import Fleet, read_fleet


def test_every_envelope_parses_and_clients_classify_as_intended(fleet: Fleet) -> None:
    classifier = Classifier()
    usage_by_agent: dict[str, Counter[str]] = {}
    actions = Counter()
    for env in fleet.envelopes:
        for ev in distribution.parse_envelope(env, classifier):
            product = (ev.user_agent or "").split("/")[0]
            usage_by_agent.setdefault(product, Counter())[ev.usage] += 1
            actions[ev.action] += 1
    manifest_only = {k: Counter({u: n for u, n in c.items() if u != "blob"})
                     for k, c in usage_by_agent.items()}
    for product in ("trivy", "clair"):
        assert set(manifest_only[product]) == {"scanner"}
    for product in ("regclient", "crane"):
        assert set(manifest_only[product]) == {"janitor"}
    assert set(manifest_only["skopeo"]) == {"replication"}
    for product in ("docker", "containerd", "cri-o", "containers", "buildkit", "kaniko"):
        assert set(manifest_only[product]) == {"use"}, product
    assert sum(c["blob"] for c in usage_by_agent.values()) > 1000
    assert set(actions) == {"push", "pull", "mount", "delete"}


def test_deploys_and_pod_lists_parse(fleet: Fleet) -> None:
    events = [e for d in fleet.deploys for e in deploy.parse_deploys(d)]
    assert len(events) == len(fleet.deploys)
    assert all(e.digest or e.tag for e in events)
    refs = 0
    for snap in fleet.snapshots:
        parsed = k8s.parse_pod_list(snap["list"], source=snap["source"],
                                    taken_at=parse_time(snap["taken_at"]))
        assert parsed.pods == len(snap["list"]["items"])
        assert all(r.digest for r in parsed.refs)
        refs += len(parsed.refs)
    assert refs > 1000


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    spec = FleetSpec(seed=21, repositories=5, days=30, duplicate_rate=0.05,
                     mix={"release": 1, "ci": 1})
    return read_fleet(generate(spec, tmp_path_factory.mktemp("tiny")))


def test_the_writer_stores_each_event_once_and_follows_the_tags(sqlite_store: Store,
                                                                tiny: Fleet) -> None:
    writer = EventWriter(sqlite_store)
    classifier = Classifier()
    now = parse_time(tiny.meta["spec"]["start"]) + timedelta(days=31)
    total = Counter()
    for env in tiny.envelopes:
        result = writer.write(distribution.parse_envelope(env, classifier), now=now)
        total["stored"] += result.stored
        total["duplicates"] += result.duplicates
    assert total["stored"] == tiny.meta["summary"]["events"]
    assert total["duplicates"] > 0
    with sqlite_store.connect() as conn:
        th = tables.tag_history.c
        moved = conn.execute(select(func.count()).where(th.tag == "main",
                                                        th.valid_to.is_not(None))).scalar_one()
        assert moved > 0  # `main` moved on, leaving its old digests
        m = tables.manifests.c
        known = conn.execute(select(func.count()).select_from(tables.manifests)
                             .where(m.first_seen.is_not(None))).scalar_one()
    assert known >= sum(1 for r in tiny.inventory if r["kind"] != "signature") * 0.9


def test_cli_generates_and_loads(tmp_path: Path) -> None:
    from recommender.cli import main

    out = tmp_path / "f"
    assert main(["fleet", "generate", "--out", str(out), "--seed", "2", "--repositories", "3",
                 "--days", "10", "--mix", "release=1,ci=1,experiment=0"]) == 0
    assert (out / "distribution.jsonl.gz").exists()
    db = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["--db", db, "fleet", "load-inventory", str(out)]) == 0


@pytest.mark.parametrize("args", [
    ["--mix", "bogus=1"],
    ["--start", "yesterday"],
    ["--repositories", "0"],
    ["--byte-scale", "3"],
])
def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   args: list[str]) -> None:
    from recommender.cli import main

    assert main(["fleet", "generate", "--out", str(tmp_path / "x"), *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert not (tmp_path / "x" / "fleet.json").exists()

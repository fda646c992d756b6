"""The generated fleet: deterministic, every archetype present, real formats, coherent history."""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from datetime import timedelta
from pathlib import Path

import pytest

from recommender.errors import ConfigError
from recommender.fleet import ARCHETYPES, FleetSpec, generate, parse_mix
from recommender.fleet.simulate import generator_version
from recommender.reference import parse_reference
from recommender.timeutil import parse_time

from .conftest import SMALL, Fleet

NAMES = ("distribution.jsonl.gz", "deploys.jsonl", "pods.jsonl", "inventory.jsonl", "fleet.json")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(small_fleet_dir: Path,
                                                      tmp_path: Path) -> None:
    again = generate(SMALL, tmp_path / "again")
    for name in NAMES:
        assert _sha(small_fleet_dir / name) == _sha(again.out_dir / name), name
    other = generate(FleetSpec(seed=12, repositories=4, days=30), tmp_path / "other")
    assert _sha(other.inventory) != _sha(small_fleet_dir / "inventory.jsonl")


def test_every_archetype_is_present_and_the_spec_is_recorded(fleet: Fleet) -> None:
    kinds = Counter(r["archetype"] for r in fleet.meta["repositories"])
    assert set(kinds) == set(ARCHETYPES)
    assert FleetSpec.from_json(fleet.meta["spec"]) == SMALL
    # The code that made it, so figures from an older generator are not mistaken for current.
    assert fleet.meta["generator"] == generator_version()
    assert re.fullmatch(r"[0-9a-f]{12}", fleet.meta["generator"])
    assert fleet.meta["summary"]["events"] == len(fleet.events) - sum(
        len(e["events"]) for e in _duplicates(fleet))


def _duplicates(fleet: Fleet) -> list[dict]:
    seen: set[str] = set()
    dups = []
    for env in fleet.envelopes:
        key = env["events"][0]["id"]
        if key in seen:
            dups.append(env)
        seen.add(key)
    return dups


def test_envelopes_look_like_distribution_notifications(fleet: Fleet) -> None:
    assert all(1 <= len(env["events"]) <= 10 for env in fleet.envelopes)
    offsets, fractions = set(), 0
    for ev in fleet.events[:20000]:
        assert set(ev) == {"id", "timestamp", "action", "target", "request", "actor", "source"}
        assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
                            ev["id"])
        m = re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)",
                         ev["timestamp"])
        assert m, ev["timestamp"]
        assert not (m.group(1) or "x").endswith("0")  # Go trims trailing zeros
        fractions += bool(m.group(1) and len(m.group(1)) == 10)
        offsets.add(m.group(2))
        t = parse_time(ev["timestamp"])
        assert SMALL.start_at <= t < SMALL.end_at
        target = ev["target"]
        assert target["repository"]
        if ev["action"] in ("push", "pull", "mount"):
            assert target["size"] == target["length"] > 0
            assert target["url"].endswith(target["digest"])
            assert ev["request"]["method"] in ("GET", "HEAD", "PUT", "POST")
        else:
            assert ev["action"] == "delete" and ev["request"]["method"] == "DELETE"
            assert ("digest" in target) != ("tag" in target)
    assert offsets == {"Z", "-08:00", "+05:30"}
    assert fractions > 1000  # nanosecond precision is the rule


def test_deliveries_repeat_and_arrive_out_of_order(fleet: Fleet) -> None:
    ids = Counter(e["id"] for e in fleet.events)
    twice = [i for i, n in ids.items() if n > 1]
    assert len(twice) > 50
    assert max(ids.values()) == 2
    # per replica, the order of arrival is not the order of time somewhere
    last: dict[str, object] = {}
    late = 0
    for env in fleet.envelopes:
        first = parse_time(env["events"][0]["timestamp"])
        src = env["events"][0]["source"]["instanceID"]
        prev = last.get(src)
        if prev is not None and first < prev:  # type: ignore[operator]
            late += 1
        last[src] = first
    assert late > 10


def test_blob_events_are_mixed_in_and_mounts_name_their_origin(fleet: Fleet) -> None:
    blob = [e for e in fleet.events if "/blobs/" in e["target"].get("url", "")]
    assert len(blob) > 1000
    assert {e["action"] for e in blob} >= {"push", "pull", "mount"}
    mounts = [e for e in blob if e["action"] == "mount"]
    assert all(e["target"]["fromRepository"] != e["target"]["repository"] for e in mounts)
    manifest_media = {"manifest", "index"}
    assert not any(any(w in e["target"]["mediaType"] for w in manifest_media) for e in blob)


def test_containerd_resolves_the_tag_with_head_then_gets_the_digest(fleet: Fleet) -> None:
    by_client: dict[str, list[dict]] = defaultdict(list)
    for e in fleet.events:
        if e["request"]["useragent"].startswith("containerd/") and e["action"] == "pull":
            by_client[e["request"]["addr"].rsplit(":", 1)[0]].append(e)
    heads = gets = 0
    for evs in by_client.values():
        evs.sort(key=lambda e: parse_time(e["timestamp"]))
        for a, b in zip(evs, evs[1:], strict=False):
            if a["request"]["method"] == "HEAD" and "tag" in a["target"]:
                heads += 1
                if (b["request"]["method"] == "GET" and "tag" not in b["target"]
                        and b["target"]["digest"] == a["target"]["digest"]):
                    gets += 1
    assert heads > 100
    assert gets / heads > 0.9


def test_real_client_user_agents_and_non_use_clients_are_all_there(fleet: Fleet) -> None:
    agents = {e["request"]["useragent"].split("/")[0] for e in fleet.events}
    assert {"docker", "containerd", "cri-o", "containers", "buildkit", "kaniko", "cosign",
            "trivy", "clair", "regclient", "crane", "skopeo", "curl"} <= agents
    heads = [e for e in fleet.events if e["request"]["useragent"].startswith(("regclient",
                                                                              "crane"))]
    assert heads and all(e["request"]["method"] == "HEAD" for e in heads)


def test_untagged_manifests_exist(fleet: Fleet) -> None:
    children = {c["digest"] for r in fleet.inventory for c in r["children"]}
    untagged = [r for r in fleet.inventory if not r["tags"] and r["deleted_at"] is None
                and r["digest"] not in children and r["kind"] != "signature"]
    assert len(untagged) > 20
    # they were tagged once: a floating tag moved on
    pushed_with_tag = {e["target"]["digest"] for e in fleet.events
                       if e["action"] == "push" and "tag" in e["target"]}
    assert all(r["digest"] in pushed_with_tag for r in untagged)


def test_signatures_follow_their_images(fleet: Fleet) -> None:
    inv = fleet.by_digest()
    sigs = [r for r in fleet.inventory if r["kind"] == "signature"]
    assert len(sigs) > 20
    pushes = {(e["target"]["repository"], e["target"].get("tag")): e for e in fleet.events
              if e["action"] == "push" and "tag" in e["target"]}
    assert {s["referrer_kind"] for s in sigs} == {"signature", "attestation"}
    for sig in sigs:
        subject = inv[sig["subject"]]
        assert subject["repository"] == sig["repository"]
        suffix = ".sig" if sig["referrer_kind"] == "signature" else ".att"
        tag = sig["subject"].replace(":", "-") + suffix
        assert tag in sig["tags"] or sig["deleted_at"] is not None
        push = pushes[(sig["repository"], tag)]
        assert parse_time(push["timestamp"]) >= parse_time(subject["pushed_at"])
        if subject["deleted_at"] is not None:  # deleted with its image
            assert sig["deleted_at"] is not None
    # an admission controller verifies the signature when its image is deployed
    verified = {e["target"]["tag"] for e in fleet.events if e["action"] == "pull"
                and e["target"].get("tag", "").endswith(".sig")
                and e["request"]["useragent"].startswith("cosign/")}
    assert len(verified) > 5


def test_indexes_have_platform_children_pulled_after_them(fleet: Fleet) -> None:
    inv = fleet.by_digest()
    indexes = [r for r in fleet.inventory if r["kind"] == "index"]
    assert indexes
    for ix in indexes[:200]:
        assert {c["platform"] for c in ix["children"]} == {"linux/amd64", "linux/arm64"}
        assert all(inv[c["digest"]]["repository"] == ix["repository"] for c in ix["children"])
    child_pulls = Counter(e["target"]["digest"] for e in fleet.events if e["action"] == "pull"
                          and e["target"]["digest"] in {c["digest"] for ix in indexes
                                                        for c in ix["children"]})
    assert sum(child_pulls.values()) > 100


def test_deleted_manifests_are_deleted_by_digest_then_tags_and_never_used_after(
        fleet: Fleet) -> None:
    deleted = {r["digest"]: parse_time(r["deleted_at"]) for r in fleet.inventory
               if r["deleted_at"]}
    assert deleted
    deletes = [e for e in fleet.events if e["action"] == "delete" and "digest" in e["target"]]
    assert {e["target"]["digest"] for e in deletes} == set(deleted)
    assert any(e["action"] == "delete" and "tag" in e["target"] for e in fleet.events)
    for e in fleet.events:
        d = deleted.get(e["target"].get("digest", ""))
        if d is not None and e["action"] != "delete":
            assert parse_time(e["timestamp"]) <= d
    for dep in fleet.deploys:
        ref = parse_reference(dep["image"])
        if ref.digest in deleted:
            assert parse_time(dep["timestamp"]) <= deleted[ref.digest]


def test_deploy_events_follow_the_webhook_format(fleet: Fleet) -> None:
    inv = fleet.by_digest()
    envs = Counter()
    for dep in fleet.deploys:
        assert set(dep) == {"timestamp", "image", "environment", "cluster", "namespace"}
        ref = parse_reference(dep["image"])
        assert ref.registry == SMALL.registry
        assert ref.tag or ref.digest
        if ref.digest:
            assert inv[ref.digest]["repository"] == ref.repository
            assert parse_time(dep["timestamp"]) >= parse_time(inv[ref.digest]["pushed_at"])
        envs[dep["environment"]] += 1
        parse_time(dep["timestamp"])
    assert set(envs) == {"staging", "production"}


def test_pod_snapshots_are_kubectl_lists_of_what_runs(fleet: Fleet) -> None:
    inv = fleet.by_digest()
    every = timedelta(days=SMALL.snapshot_every_days)
    sources = Counter(s["source"] for s in fleet.snapshots)
    assert set(sources) == {"stg-1", "prod-eu-1", "prod-us-1"}
    assert len(set(sources.values())) == 1
    assert sources["stg-1"] == -(-SMALL.days // SMALL.snapshot_every_days)
    prev = None
    phases = Counter()
    inits = 0
    for snap in fleet.snapshots:
        taken = parse_time(snap["taken_at"])
        assert snap["list"]["kind"] == "List" and snap["list"]["apiVersion"] == "v1"
        if prev is not None and snap["source"] == "stg-1":
            assert taken - prev < every + timedelta(hours=1)
        if snap["source"] == "stg-1":
            prev = taken
        for pod in snap["list"]["items"]:
            assert pod["kind"] == "Pod" and pod["metadata"]["namespace"]
            phases[pod["status"]["phase"]] += 1
            inits += len(pod["status"].get("initContainerStatuses", ()))
            for st in (pod["status"]["containerStatuses"]
                       + pod["status"].get("initContainerStatuses", [])):
                ref = parse_reference(st["imageID"])
                rec = inv[ref.digest]
                assert rec["repository"] == ref.repository
                assert parse_time(rec["pushed_at"]) <= taken
                assert rec["deleted_at"] is None or parse_time(rec["deleted_at"]) > taken
    assert phases["Running"] > 1000
    assert inits > 100  # init containers (database migrations) run the app's image too
    # completed CronJob pods are listed only where the job history keeps them
    keeps = any(r.get("keeps_pods") for r in fleet.meta["repositories"])
    assert (phases["Succeeded"] > 0) == keeps


def test_layers_are_shared_across_repositories_and_sizes_are_realistic(fleet: Fleet) -> None:
    repos_of: dict[str, set[str]] = defaultdict(set)
    sizes = []
    for r in fleet.inventory:
        for b in r["blobs"][1:]:
            repos_of[b["digest"]].add(r["repository"])
            sizes.append(b["size"])
    assert max(len(v) for v in repos_of.values()) >= 3
    assert min(sizes) < 5_000_000 and max(sizes) > 100_000_000
    for r in fleet.inventory:  # digests are the sha256 of the manifest's real JSON
        assert r["digest"].startswith("sha256:") and len(r["digest"]) == 71


def test_cron_images_are_pulled_on_their_period(fleet: Fleet) -> None:
    cron = {r["name"] for r in fleet.meta["repositories"] if r["archetype"] == "cron"}
    runs = sorted(parse_time(e["timestamp"]) for e in fleet.events
                  if e["target"]["repository"] in cron and e["action"] == "pull"
                  and e["request"]["method"] == "HEAD"
                  and e["request"]["useragent"].startswith(("containerd", "cri-o")))
    assert len(runs) >= 2
    gaps = {round((b - a).total_seconds() / 86400) for a, b in zip(runs, runs[1:], strict=False)}
    assert gaps & {7, 14, 30, 91}


def test_mixes_and_bad_specs() -> None:
    assert parse_mix("ci-heavy")["ci"] == 0.5
    assert parse_mix("release-heavy,cron=0")["cron"] == 0
    assert parse_mix("ci=2")["ci"] == 2
    with pytest.raises(ConfigError, match="unknown archetype 'bogus'"):
        parse_mix("bogus=1")
    with pytest.raises(ConfigError, match="bad mix item"):
        parse_mix("ci=lots")
    with pytest.raises(ConfigError, match="weight 0"):
        FleetSpec(mix={"ci": 0})
    with pytest.raises(ConfigError, match="byte_scale"):
        FleetSpec(byte_scale=2.0)


def test_a_mix_without_an_archetype_has_none_of_it(tmp_path: Path) -> None:
    files = generate(FleetSpec(seed=5, repositories=6, days=20,
                               mix=parse_mix("experiment=0,ci=0")), tmp_path)
    assert files.summary["archetypes"].keys() == {"base", "cron", "daemon", "mirror", "release"}


def test_bytes_do_not_depend_on_the_process(tmp_path: Path) -> None:
    """Python salts str hashes per process: nothing may depend on set or hash order."""
    import os
    import subprocess
    import sys

    code = ("import sys; from recommender.fleet import FleetSpec, generate; "
            "generate(FleetSpec(seed=8, repositories=5, days=20), sys.argv[1])")
    for salt in ("1", "2"):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / salt)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": salt})
    for name in NAMES:
        assert _sha(tmp_path / "1" / name) == _sha(tmp_path / "2" / name), name


def test_prehistory_exists_in_the_registry_but_not_in_telemetry(tmp_path: Path) -> None:
    from .conftest import read_fleet

    spec = FleetSpec(seed=9, repositories=8, days=30, prehistory_days=60)
    f = read_fleet(generate(spec, tmp_path))
    start = spec.start_at
    assert min(parse_time(e["timestamp"]) for e in f.events) >= start
    assert min(parse_time(d["timestamp"]) for d in f.deploys) >= start
    old = [r for r in f.inventory if parse_time(r["pushed_at"]) < start]
    assert len(old) > 50
    assert all(parse_time(r["first_seen"]) == start for r in old)
    assert all(r["deleted_at"] is None or parse_time(r["deleted_at"]) >= start
               for r in f.inventory)
    # on day one, pods already run images pushed before telemetry began
    first = [s for s in f.snapshots if parse_time(s["taken_at"]) < start + timedelta(days=1)]
    running = {st["imageID"].split("@")[1] for s in first for p in s["list"]["items"]
               for st in p["status"]["containerStatuses"]}
    assert running & {r["digest"] for r in old}


def test_nothing_is_pulled_or_tagged_before_it_is_pushed(fleet: Fleet) -> None:
    pushed = {r["digest"]: parse_time(r["pushed_at"]) for r in fleet.inventory}
    for e in fleet.events:
        digest = e["target"].get("digest")
        if e["action"] in ("pull", "push") and digest in pushed:
            assert parse_time(e["timestamp"]) >= pushed[digest] - timedelta(seconds=1), e

"""``generate(spec, out_dir)``: simulate a fleet and write its files. Same spec, same bytes.

Randomness comes only from numpy generators spawned from ``spec.seed``: one stream per
repository (so adding a repository does not reshuffle the others) and one per fleet-wide
actor (deletions, workloads, scanners, janitors, writers).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from . import archetypes, infra
from .build import FAMILIES, Repo
from .clients import HUMANS
from .crosscut import (
    TagIntervals,
    delete_by_hand,
    janitors,
    runs_of,
    scanners,
    settle_workloads,
)
from .distribution import write_distribution
from .spec import ARCHETYPES, FleetSpec
from .world import DELETE, NEVER, TAGDEL, World
from .writers import inventory_records, write_deploys, write_inventory, write_pods

__all__ = ["FleetFiles", "RUNNERS", "build_world", "generate"]

RUNNERS: dict[str, Callable[[Repo], None]] = {
    "ci": archetypes.ci,
    "release": archetypes.release,
    "experiment": archetypes.experiment,
    "cron": infra.cron,
    "base": infra.base,
    "mirror": infra.mirror,
    "daemon": infra.daemon,
}

TEAMS = ("shop", "payments", "search", "identity", "data", "growth", "ml", "support")
_WORDS = ("api", "web", "worker", "gateway", "billing", "catalog", "orders", "auth", "notify",
          "ledger", "indexer", "recs", "cart", "checkout", "profile", "events", "pricing",
          "ingest", "export", "reports", "scheduler", "search", "feeds", "media")
_APP_FAMILIES = ("python", "node", "golang", "jdk", "distroless", "alpine")


@dataclass(frozen=True)
class FleetFiles:
    """Where a generated fleet's files are, and what they hold."""

    out_dir: Path
    distribution: Path
    deploys: Path
    pods: Path
    inventory: Path
    fleet: Path
    summary: dict[str, Any]


def _plan(spec: FleetSpec, rng: np.random.Generator) -> list[str]:
    """Which archetype each repository follows: every weighted archetype at least once."""
    active = [a for a in ARCHETYPES if spec.mix.get(a, 0) > 0]
    weights = np.array([spec.mix[a] for a in active], dtype=float)
    kinds = active[: spec.repositories]
    rest = spec.repositories - len(kinds)
    if rest > 0:
        kinds += [active[i] for i in rng.choice(len(active), rest, p=weights / weights.sum())]
    return [kinds[i] for i in rng.permutation(len(kinds))]


def _name(kind: str, rng: np.random.Generator, taken: set[str]) -> tuple[str, str, str]:
    team = str(rng.choice(TEAMS))
    word = str(rng.choice(_WORDS))
    family = str(rng.choice(_APP_FAMILIES))
    if kind in ("ci", "release"):
        name = f"{team}/{word}"
    elif kind == "cron":
        name, family = f"{team}/{word}-job", str(rng.choice(("python", "alpine", "golang")))
    elif kind == "base":
        family = str(rng.choice(tuple(FAMILIES)))
        name, team = f"base/{family}", "platform"
    elif kind == "experiment":
        name = f"sandbox/{rng.choice(HUMANS)}-{word}"
        family = str(rng.choice(("python", "node", "ubuntu")))
    elif kind == "mirror":
        name, team = f"mirror/{rng.choice(infra.UPSTREAMS)}", "platform"
        family = str(rng.choice(("debian", "alpine")))
    else:
        name, team = f"platform/{rng.choice(infra.DAEMONS)}", "platform"
        family = str(rng.choice(("distroless", "alpine")))
    base, k = name, 2
    while name in taken:
        name, k = f"{base}-{k}", k + 1
    taken.add(name)
    return name, team, family


_MULTIARCH = {"ci": 0.1, "release": 0.3, "daemon": 0.5, "cron": 0.0, "experiment": 0.0}
_SIGNED = {"ci": 0.3, "release": 0.6, "daemon": 0.5, "cron": 0.2}
_ATTEST = 0.4  # of signed repositories, those that also attest provenance


def build_world(spec: FleetSpec, progress: Callable[[str], None] | None = None
                ) -> tuple[World, list[Any], TagIntervals, dict[str, int]]:
    """Simulate the fleet in memory (no files)."""
    seq = np.random.SeedSequence(spec.seed)
    plan_seq, names_seq, global_seq, repo_seq = seq.spawn(4)
    kinds = _plan(spec, np.random.default_rng(plan_seq))
    names_rng = np.random.default_rng(names_seq)
    g = [np.random.default_rng(s) for s in global_seq.spawn(6)]
    w = World(spec)
    taken: set[str] = set()
    repos = []
    for kind, s in zip(kinds, repo_seq.spawn(len(kinds)), strict=True):
        rng = np.random.default_rng(s)
        name, team, family = _name(kind, names_rng, taken)
        traits: dict[str, object] = {
            "team": team, "family": family,
            "flavor": "oci" if rng.random() < 0.6 else "docker",
            "multiarch": bool(rng.random() < _MULTIARCH.get(kind, 0.0)),
            "signed": bool(rng.random() < _SIGNED.get(kind, 0.0)),
        }
        rid = w.add_repo(name, kind, traits)
        pusher = w.clients.ci(rid, str(rng.choice(("buildkit", "kaniko", "docker"))))
        repos.append(Repo(w, rng, rid, name, team, family, str(traits["flavor"]),
                          bool(traits["multiarch"]), bool(traits["signed"]),
                          deps_median=float(np.clip(rng.lognormal(np.log(40e6), 0.9), 2e6, 9e8)),
                          app_median=float(np.clip(rng.lognormal(np.log(8e6), 0.8), 2e5, 2e8)),
                          pusher=pusher, attest=bool(traits["signed"]) and bool(
                              rng.random() < _ATTEST)))
        traits["attest"] = repos[-1].attest
    for r in repos:
        RUNNERS[w.repo_kind[r.rid]](r)
        # what the archetype drew for this repository (fleet.json: per-archetype evaluation)
        w.repo_traits[r.rid].update(r.extra)
        if progress is not None:
            progress(f"simulated {r.name}")
    runs = runs_of(w)
    deleted = delete_by_hand(w, g[0], runs)
    settle_workloads(w, g[1], runs)
    tags = TagIntervals(w)
    scanners(w, g[2], tags)
    janitors(w, g[3], tags)
    return w, runs, tags, {"hand_deleted": deleted}


def _visible(w: World, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop what cannot have happened (use of a manifest after its deletion) and what
    telemetry did not see (events outside the window, e.g. in the prehistory)."""
    deleted = np.array([m.deleted_ns for m in w.manifests] or [NEVER], dtype=np.int64)
    t, action, man = cols["t"], cols["action"], cols["man"]
    after_delete = (t > deleted[man]) & (action != DELETE) & (action != TAGDEL)
    keep = ~after_delete & (t >= w.window_ns) & (t < w.end_ns)
    return {k: v[keep] for k, v in cols.items()}


def generate(spec: FleetSpec, out_dir: Path | str,
             progress: Callable[[str], None] | None = None) -> FleetFiles:
    """Simulate ``spec`` and write distribution.jsonl.gz, deploys.jsonl, pods.jsonl,
    inventory.jsonl and fleet.json into ``out_dir`` (created if missing)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w, runs, tags, extra = build_world(spec, progress)
    writer_seq = np.random.SeedSequence([spec.seed, 7])
    r_dist, r_dep, r_pods = (np.random.default_rng(s) for s in writer_seq.spawn(3))
    cols = _visible(w, w.columns())
    files = FleetFiles(out, out / "distribution.jsonl.gz", out / "deploys.jsonl",
                       out / "pods.jsonl", out / "inventory.jsonl", out / "fleet.json", {})
    if progress is not None:
        progress(f"writing {len(cols['t'])} events")
    dist = write_distribution(w, cols, files.distribution, r_dist)
    deploys = write_deploys(w, files.deploys, r_dep)
    if progress is not None:
        progress("writing pod snapshots")
    pods = write_pods(w, runs, files.pods, r_pods)
    records = inventory_records(w, tags)
    write_inventory(records, files.inventory)
    summary = _summary(w, cols, records, dist, deploys, pods, extra)
    doc = {"spec": spec.to_json(), "summary": summary,
           "repositories": [{"name": n, "archetype": k, **t}
                            for n, k, t in zip(w.repos, w.repo_kind, w.repo_traits, strict=True)]}
    files.fleet.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
    return FleetFiles(out, files.distribution, files.deploys, files.pods, files.inventory,
                      files.fleet, summary)


def _summary(w: World, cols: dict[str, np.ndarray], records: list[dict[str, Any]],
             dist: dict[str, int], deploys: int, pods: dict[str, int],
             extra: dict[str, int]) -> dict[str, Any]:
    from .world import ACTION_NAMES

    kinds = Counter(r["kind"] for r in records)
    alive = [r for r in records if r["deleted_at"] is None]
    child_digests = {c["digest"] for r in records for c in r["children"]}
    blob_sizes = {b["digest"]: b["size"] for r in alive for b in r["blobs"]}
    is_blob = cols["blob"] >= 0
    actions = Counter(ACTION_NAMES[a] for a in cols["action"][~is_blob].tolist())
    return {
        "repositories": len(w.repos),
        "archetypes": dict(sorted(Counter(w.repo_kind).items())),
        "manifests": len(records),
        "manifest_kinds": dict(sorted(kinds.items())),
        "alive": len(alive),
        "alive_tagged": sum(1 for r in alive if r["tags"]),
        "alive_untagged": sum(1 for r in alive if not r["tags"]
                              and r["digest"] not in child_digests),
        "deleted": len(records) - len(alive),
        "hand_deleted": extra["hand_deleted"],
        "blobs_alive": len(blob_sizes),
        "bytes_alive_deduplicated": sum(blob_sizes.values()),
        "events": int(len(cols["t"])),
        "manifest_events": dict(sorted(actions.items())),
        "blob_events": int(is_blob.sum()),
        **{k: v for k, v in dist.items() if k != "events"},
        "deploys": deploys,
        **pods,
    }

"""Writing deploy events, Kubernetes pod lists and the inventory, in their real formats."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .clients import CLUSTERS
from .crosscut import Run, TagIntervals
from .distribution import format_time
from .world import DAY, MINUTE, NEVER, SECOND, World

__all__ = ["inventory_records", "write_deploys", "write_inventory", "write_pods"]

_POD_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def _iso(t_ns: int) -> str:
    return datetime.fromtimestamp(t_ns // SECOND, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_deploys(w: World, path: Path, rng: np.random.Generator) -> int:
    """``deploys.jsonl``: tagwarden's deploy webhook, one JSON object per line, by time."""
    host = w.spec.registry
    rows = sorted(w.deploys, key=lambda d: (d[0], d[4], d[5], d[1]))
    with path.open("wb") as out:
        for t, man, tag, env, cluster, ns in rows:
            if t < w.window_ns:  # before telemetry began
                continue
            m = w.manifests[man]
            name = f"{host}/{w.repos[m.repo]}"
            style = rng.random()
            # CI/CD systems post tag@digest; Argo CD templates often the tag; pins the digest
            if tag < 0 or style < 0.12:
                image = f"{name}@{m.digest}"
            elif style < 0.3:
                image = f"{name}:{w.tags[tag]}"
            else:
                image = f"{name}:{w.tags[tag]}@{m.digest}"
            offset = 0 if rng.random() < 0.8 else 60
            doc = {"timestamp": format_time(t - t % 1000, offset), "image": image,
                   "environment": env, "cluster": cluster, "namespace": ns}
            out.write(orjson.dumps(doc) + b"\n")
    return sum(1 for r in rows if r[0] >= w.window_ns)


class _PodFactory:
    """Pod documents of one run, built once and reused by every snapshot that sees them."""

    def __init__(self, w: World, rng: np.random.Generator) -> None:
        self.w = w
        self.rng = rng
        self.cache: dict[int, list[dict[str, Any]]] = {}

    def _name(self, n: int) -> str:
        return "".join(_POD_CHARS[int(i)] for i in self.rng.integers(0, len(_POD_CHARS), n))

    def _uid(self) -> str:
        h = f"{int(self.rng.integers(0, 2**62)):016x}{int(self.rng.integers(0, 2**62)):016x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

    def pods(self, k: int, run: Run) -> list[dict[str, Any]]:
        got = self.cache.get(k)
        if got is not None:
            return got
        w = self.w
        cl = CLUSTERS[run.cluster]
        m = w.manifests[run.man]
        host = w.spec.registry
        name = f"{host}/{w.repos[m.repo]}"
        spec_image = (f"{name}@{m.digest}" if run.by_digest or run.tag < 0
                      else f"{name}:{w.tags[run.tag]}")
        # containerd reports the digest it resolved (the index for a multi-arch image);
        # cri-o reports the platform manifest it ran
        shown = m.children[0][0] if (m.children and cl.runtime == "cri-o") else m.id
        image_id = f"{name}@{w.manifests[shown].digest}"
        status_image = spec_image
        daemon = run.namespace == "kube-system"
        job = run.kind == "job"
        owner_kind = "DaemonSet" if daemon else ("Job" if job else "ReplicaSet")
        rs = self._name(10)
        # applications that migrate their database first run the same image as an init
        # container (reported in initContainerStatuses)
        migrate = not (daemon or job) and self.rng.random() < 0.3
        count = cl.nodes if daemon else min(run.replicas, 12)
        started = _iso(run.start + 30 * SECOND)
        out = []
        for i in range(count):
            node = i if daemon else int(self.rng.integers(0, cl.nodes))
            if job:
                pod_name = f"{run.workload}-{int(run.start // SECOND)}-{self._name(5)}"
                state: dict[str, Any] = {"terminated": {
                    "exitCode": 0, "reason": "Completed", "startedAt": started,
                    "finishedAt": _iso(run.start + 4 * MINUTE),
                    "containerID": "containerd://" + self._cid()}}
            else:
                pod_name = f"{run.workload}-{'' if daemon else rs + '-'}{self._name(5)}"
                state = {"running": {"startedAt": started}}
            runtime = "cri-o://" if cl.runtime == "cri-o" else "containerd://"
            status: dict[str, Any] = {
                "name": run.container, "image": status_image, "imageID": image_id,
                "containerID": runtime + self._cid(),
                "ready": not job, "restartCount": 0, "started": not job, "state": state,
            }
            pod: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name, "namespace": run.namespace, "uid": self._uid(),
                    "creationTimestamp": _iso(run.start),
                    "labels": {"app.kubernetes.io/name": run.workload},
                    "ownerReferences": [{"apiVersion": "batch/v1" if job else "apps/v1",
                                         "kind": owner_kind,
                                         "name": run.workload if daemon or job
                                         else f"{run.workload}-{rs}",
                                         "uid": self._uid(), "controller": True,
                                         "blockOwnerDeletion": True}],
                },
                "spec": {
                    "containers": [{"name": run.container, "image": spec_image,
                                    "imagePullPolicy": "IfNotPresent"}],
                    "nodeName": f"{run.cluster}-node-{node:02d}",
                    "restartPolicy": "Never" if job else "Always",
                },
                "status": {
                    "phase": "Succeeded" if job else "Running",
                    "hostIP": f"{cl.subnet}.{node // 250}.{node % 250 + 4}",
                    "podIP": f"100.{64 + node % 60}.{i % 250}.{int(self.rng.integers(2, 250))}",
                    "startTime": _iso(run.start),
                    "containerStatuses": [status],
                },
            }
            if migrate:
                pod["spec"]["initContainers"] = [{"name": "migrate", "image": spec_image,
                                                  "command": ["/app/migrate"]}]
                pod["status"]["initContainerStatuses"] = [{
                    "name": "migrate", "image": status_image, "imageID": image_id,
                    "containerID": runtime + self._cid(),
                    "ready": True, "restartCount": 0, "started": False,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                             "startedAt": _iso(run.start + 5 * SECOND),
                                             "finishedAt": _iso(run.start + 25 * SECOND)}}}]
            out.append(pod)
        self.cache[k] = out
        return out

    def _cid(self) -> str:
        return hashlib.sha256(self.rng.bytes(16)).hexdigest()


def write_pods(w: World, runs: list[Run], path: Path, rng: np.random.Generator) -> dict[str, int]:
    """``pods.jsonl``: per cluster, one ``kubectl get pods -A -o json`` every N days."""
    every = w.spec.snapshot_every_days * DAY
    factory = _PodFactory(w, rng)
    by_cluster: dict[str, list[int]] = {}
    for k, run in enumerate(runs):
        by_cluster.setdefault(run.cluster, []).append(k)
    starts = {c: np.array([runs[k].start for k in ks]) for c, ks in by_cluster.items()}
    ends = {c: np.array([runs[k].end for k in ks]) for c, ks in by_cluster.items()}
    snapshots = pods = 0
    with path.open("wb") as out:
        for day in range(w.window_ns, w.end_ns, every):
            for ci, cluster in enumerate(CLUSTERS):
                at = day + 30 * MINUTE + ci * 7 * MINUTE + int(rng.integers(0, 90)) * SECOND
                items: list[dict[str, Any]] = []
                if cluster in by_cluster:
                    live = np.nonzero((starts[cluster] <= at) & (at < ends[cluster]))[0]
                    for j in live.tolist():
                        k = by_cluster[cluster][j]
                        items.extend(factory.pods(k, runs[k]))
                doc = {"source": cluster, "taken_at": format_time(at, 0),
                       "list": {"apiVersion": "v1", "items": items, "kind": "List",
                                "metadata": {"resourceVersion": ""}}}
                out.write(orjson.dumps(doc) + b"\n")
                snapshots += 1
                pods += len(items)
    return {"snapshots": snapshots, "pods": pods}


def inventory_records(w: World, tags: TagIntervals) -> list[dict[str, Any]]:
    """One record per manifest ever pushed, with its blobs, children, subject and end tags."""
    at_end = tags.valid_at(w.end_ns - 1)
    current: dict[int, list[str]] = {}
    for i in at_end.tolist():
        current.setdefault(int(tags.man[i]), []).append(w.tags[int(tags.tag[i])])
    host = w.spec.registry
    out = []
    for m in w.manifests:
        if m.deleted_ns < w.window_ns:  # gone before tagwarden looked: nobody knows of it
            continue
        blobs = []
        for b in (w.blobs[x] for x in m.blobs):
            entry: dict[str, Any] = {"digest": b.digest, "size": b.size,
                                     "media_type": b.media_type}
            if b.kind == "layer":
                entry["content"] = b.key
            blobs.append(entry)
        rec: dict[str, Any] = {
            "repository": w.repos[m.repo],
            "digest": m.digest,
            "media_type": m.media_type,
            "size": m.size,
            "kind": m.kind,
            "flavor": m.flavor,
            "platform": m.platform,
            "blobs": blobs,
            "children": [{"digest": w.manifests[c].digest, "size": w.manifests[c].size,
                          "media_type": w.manifests[c].media_type, "platform": p}
                         for c, p in m.children],
            "subject": w.manifests[m.subject].digest if m.subject >= 0 else None,
            "referrer_kind": m.referrer,
            "created_at": _iso(m.created_ns),
            "pushed_at": format_time(m.pushed_ns, 0),
            # what a scan can know: pushed in the prehistory = first seen when telemetry began
            "first_seen": format_time(max(m.pushed_ns, w.window_ns), 0),
            "deleted_at": format_time(m.deleted_ns, 0) if m.deleted_ns < NEVER else None,
            "tags": sorted(current.get(m.id, [])),
            "labels": m.labels or None,
        }
        if m.kind == "signature":
            rec["identity"] = f"{host}/{w.repos[m.repo]}"
        out.append(rec)
    return out


def write_inventory(records: list[dict[str, Any]], path: Path,
                    progress: Callable[[int], None] | None = None) -> int:
    with path.open("wb") as out:
        for rec in records:
            out.write(orjson.dumps(rec) + b"\n")
    return len(records)

"""The fleet being built: repositories, blobs, manifests, tag moves, events, deploys, workloads.

Archetypes call :class:`World` to push images, move tags, pull, deploy; the writers render
what it holds. Events are kept as columns (numpy arrays in chunks) because a large fleet has
millions of them; they are rendered to JSON only when written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import content
from .clients import CLUSTERS, ClientTable
from .spec import FleetSpec

__all__ = ["Blob", "Manifest", "World", "DAY", "HOUR", "MINUTE", "SECOND"]

SECOND = 1_000_000_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

# event columns
PUSH, PULL, DELETE, MOUNT, TAGDEL = 0, 1, 2, 3, 4
ACTION_NAMES = ("push", "pull", "delete", "mount", "delete")
GET, HEAD, PUT, DEL, POST = 0, 1, 2, 3, 4
METHOD_NAMES = ("GET", "HEAD", "PUT", "DELETE", "POST")
NEVER = np.iinfo(np.int64).max


@dataclass(slots=True)
class Blob:
    key: str
    digest: str
    size: int
    media_type: str
    kind: str  # layer | config | payload
    repo: int  # first repository that pushed it (later pushes elsewhere are mounts)


@dataclass(slots=True)
class Manifest:
    id: int
    repo: int
    digest: str
    media_type: str
    size: int
    kind: str  # image | index | signature
    flavor: str
    pushed_ns: int
    created_ns: int
    platform: str | None = None
    blobs: list[int] = field(default_factory=list)  # config first, then layers
    children: list[tuple[int, str]] = field(default_factory=list)
    subject: int = -1
    referrer: str | None = None  # signature | attestation (cosign tag referrers)
    labels: dict[str, str] = field(default_factory=dict)
    deleted_ns: int = int(NEVER)


@dataclass(slots=True)
class Workload:
    cluster: str
    namespace: str
    name: str
    container: str = "app"
    kind: str = "container"  # container | init
    # (time, manifest or -1 = removed, tag, replicas, pinned by digest)
    history: list[tuple[int, int, int, int, bool]] = field(default_factory=list)


class World:
    def __init__(self, spec: FleetSpec) -> None:
        self.spec = spec
        # telemetry starts at ``window_ns``; the simulation may start earlier (prehistory)
        self.window_ns = int(spec.start_at.timestamp()) * SECOND
        self.start_ns = self.window_ns - spec.prehistory_days * DAY
        self.end_ns = int(spec.end_at.timestamp()) * SECOND
        self.repos: list[str] = []
        self.repo_kind: list[str] = []
        self.repo_traits: list[dict[str, object]] = []
        self.blobs: list[Blob] = []
        self._blob_by_key: dict[str, int] = {}
        self._diff_ids: dict[int, str] = {}
        self.manifests: list[Manifest] = []
        self.signature_of: dict[int, int] = {}  # image manifest -> its cosign signature
        self.referrers_of: dict[int, list[int]] = {}  # image -> its signature, attestation
        self.tags: list[str] = []
        self._tag_ids: dict[str, int] = {}
        self.assignments: list[tuple[int, int, int, int]] = []  # (t, repo, tag, manifest)
        self.deploys: list[tuple[int, int, int, str, str, str]] = []  # t, man, tag, env, cl, ns
        self.workloads: dict[tuple[str, str, str], Workload] = {}
        self.clients = ClientTable()
        self._repo_blobs: set[tuple[int, int]] = set()
        self._scalar: list[tuple[int, int, int, int, int, int, int]] = []
        self._chunks: list[tuple[Any, ...]] = []

    # --- names ---------------------------------------------------------------------------

    def add_repo(self, name: str, kind: str, traits: dict[str, object]) -> int:
        self.repos.append(name)
        self.repo_kind.append(kind)
        self.repo_traits.append(traits)
        return len(self.repos) - 1

    def tag_id(self, name: str) -> int:
        tid = self._tag_ids.get(name)
        if tid is None:
            tid = self._tag_ids[name] = len(self.tags)
            self.tags.append(name)
        return tid

    # --- content -------------------------------------------------------------------------

    def blob(self, key: str, size: int, media_type: str, repo: int) -> int:
        bid = self._blob_by_key.get(key)
        if bid is None:
            # layer keys end with the nominal size ("...:<bytes>"): materialize relies on it
            digest, real_size, diff_id = content.layer_digests(key, size, self.spec.byte_scale)
            bid = self._blob_by_key[key] = len(self.blobs)
            self.blobs.append(Blob(key, digest, real_size, media_type, "layer", repo))
            self._diff_ids[bid] = diff_id
        return bid

    def diff_id(self, bid: int) -> str:
        return self._diff_ids[bid]

    def _raw_blob(self, key: str, data: bytes, media_type: str, kind: str, repo: int) -> int:
        bid = self._blob_by_key.get(key)
        if bid is None:
            bid = self._blob_by_key[key] = len(self.blobs)
            self.blobs.append(Blob(key, content.sha256(data), len(data), media_type, kind, repo))
        return bid

    def image(self, repo: int, t_ns: int, layer_ids: list[int], *, flavor: str,
              platform: str = "linux/amd64", labels: dict[str, str] | None = None) -> int:
        """Build an image manifest (its digest is the sha256 of the manifest JSON)."""
        labels = labels or {}
        diff_ids = [self.diff_id(b) for b in layer_ids]
        cfg = content.config_bytes(created_ns=t_ns, platform=platform, diff_ids=diff_ids,
                                   repository=self.repos[repo], labels=labels)
        cfg_digest = content.sha256(cfg)
        cid = self._raw_blob("config:" + cfg_digest, cfg, content.MEDIA[flavor]["config"],
                             "config", repo)
        body = content.manifest_bytes(
            flavor, (cfg_digest, len(cfg)),
            [(self.blobs[b].digest, self.blobs[b].size) for b in layer_ids])
        return self._manifest(repo, body, content.MEDIA[flavor]["manifest"], "image", flavor,
                              t_ns, platform=platform, blobs=[cid, *layer_ids], labels=labels)

    def index(self, repo: int, t_ns: int, children: list[int], *, flavor: str) -> int:
        kids = [(self.manifests[c].digest, self.manifests[c].size,
                 self.manifests[c].media_type, self.manifests[c].platform or "linux/amd64")
                for c in children]
        body = content.index_bytes(flavor, kids)
        mid = self._manifest(repo, body, content.MEDIA[flavor]["index"], "index", flavor, t_ns)
        self.manifests[mid].children = [(c, k[3]) for c, k in zip(children, kids, strict=True)]
        return mid

    def signature(self, repo: int, subject: int, t_ns: int, kind: str = "signature") -> int:
        """A cosign tag referrer of ``subject``: ``signature`` (.sig) or ``attestation`` (.att)."""
        subj = self.manifests[subject].digest
        host, name = self.spec.registry, self.repos[repo]
        if kind == "signature":
            payload = content.signature_payload(host, name, subj)
            media = content.COSIGN_PAYLOAD
        else:
            payload = content.attestation_payload(host, name, subj)
            media = content.DSSE_ENVELOPE
        pid = self._raw_blob("payload:" + content.sha256(payload), payload, media, "payload",
                             repo)
        cfg = content.signature_config_bytes(t_ns, payload)
        cfg_digest = content.sha256(cfg)
        cid = self._raw_blob("config:" + cfg_digest, cfg, content.MEDIA["oci"]["config"],
                             "config", repo)
        if kind == "signature":
            body = content.signature_manifest_bytes(payload, (cfg_digest, len(cfg)), subj)
        else:
            body = content.attestation_manifest_bytes(payload, (cfg_digest, len(cfg)))
        mid = self._manifest(repo, body, content.MEDIA["oci"]["manifest"], "signature", "oci",
                             t_ns, blobs=[cid, pid])
        self.manifests[mid].subject = subject
        self.manifests[mid].referrer = kind
        self.referrers_of.setdefault(subject, []).append(mid)
        if kind == "signature":
            self.signature_of[subject] = mid
        return mid

    def _manifest(self, repo: int, body: bytes, media_type: str, kind: str, flavor: str,
                  t_ns: int, **extra: object) -> int:
        mid = len(self.manifests)
        self.manifests.append(Manifest(mid, repo, content.sha256(body), media_type, len(body),
                                       kind, flavor, t_ns, t_ns, **extra))  # type: ignore[arg-type]
        return mid

    def sig_tag(self, subject: int, suffix: str = ".sig") -> int:
        return self.tag_id(self.manifests[subject].digest.replace(":", "-") + suffix)

    def referrer_tag(self, referrer: int) -> int:
        m = self.manifests[referrer]
        return self.sig_tag(m.subject, ".sig" if m.referrer == "signature" else ".att")

    # --- events --------------------------------------------------------------------------

    def event(self, t: int, action: int, man: int, tag: int, method: int, client: int,
              blob: int = -1) -> None:
        self._scalar.append((t, action, man, tag, method, client, blob))

    def events(self, t: np.ndarray, action: int, man: np.ndarray | int, tag: np.ndarray | int,
               method: int, client: np.ndarray | int, blob: np.ndarray | int = -1) -> None:
        """Many events at once; every column but ``t`` may be one value for all of them."""
        if len(t) == 0:
            return
        # scalars stay scalars until ``columns``: most calls share all but the times
        self._chunks.append((np.asarray(t, dtype=np.int64), action, man, tag, method, client,
                             blob))

    def columns(self) -> dict[str, np.ndarray]:
        """All events as columns, in no particular order."""
        chunks: list[tuple[Any, ...]] = list(self._chunks)
        if self._scalar:
            arr = np.array(self._scalar, dtype=np.int64)
            chunks.append(tuple(arr[:, i] for i in range(7)))
        names = ("t", "action", "man", "tag", "method", "client", "blob")
        dtypes = (np.int64, np.int8, np.int32, np.int32, np.int8, np.int32, np.int32)
        lengths = np.array([len(c[0]) for c in chunks], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        out = {}
        for i, (name, dtype) in enumerate(zip(names, dtypes, strict=True)):
            scalars = np.array([0 if isinstance(c[i], np.ndarray) else c[i] for c in chunks],
                               dtype=np.int64)
            col = np.repeat(scalars, lengths).astype(dtype)
            for k, c in enumerate(chunks):
                if isinstance(c[i], np.ndarray):
                    col[offsets[k]:offsets[k + 1]] = c[i]
            out[name] = col
        return out

    # --- high-level operations -------------------------------------------------------------

    def push(self, t: int, man: int, tag: int, client: int, *, new_blobs: bool = True) -> None:
        """Push a manifest (blobs first, as clients do), optionally by tag; moves the tag."""
        m = self.manifests[man]
        m.pushed_ns = min(m.pushed_ns, t)  # platform manifests go up before their index
        if new_blobs:
            for i, bid in enumerate(m.blobs):
                if (m.repo, bid) in self._repo_blobs:
                    continue  # already there: the client's HEAD finds it, no event
                self._repo_blobs.add((m.repo, bid))
                bt = t - (len(m.blobs) - i) * 300_000_000
                if self.blobs[bid].repo == m.repo:
                    self.event(bt, PUSH, man, -1, PUT, client, bid)
                else:  # cross-repository blob mount: Distribution fires a mount event
                    self.event(bt, MOUNT, man, -1, POST, client, bid)
        self.event(t, PUSH, man, tag, PUT, client)
        if tag >= 0:
            self.assignments.append((t, m.repo, tag, man))

    def retag(self, t: int, man: int, tag: int, client: int) -> None:
        """Put an existing manifest under another tag (``docker tag`` + push, ``crane tag``)."""
        self.event(t, PUSH, man, tag, PUT, client)
        self.assignments.append((t, self.manifests[man].repo, tag, man))

    def pull(self, times: np.ndarray, man: int, tag: int, style: str,
             clients: np.ndarray | int, rng: np.random.Generator, *, blobs: bool = True) -> None:
        """Pulls of one manifest as the client kind makes them.

        ``head_get``: containerd, buildkit, recent docker resolve ``repo:tag`` with a HEAD by
        tag, then GET by digest (only the HEAD carries the tag). ``get``: a GET by tag (or by
        digest when ``tag`` is -1). ``head``: janitors checking a tag. For an index a real
        client then GETs its platform manifest by digest, and a cold cache fetches blobs.
        """
        n = len(times)
        if n == 0:
            return
        times = np.asarray(times, dtype=np.int64)
        if style == "head":
            self.events(times, PULL, man, tag, HEAD, clients)
            return
        last = times
        if style == "head_get":
            self.events(times, PULL, man, tag, HEAD, clients)
            last = times + rng.integers(3_000_000, 60_000_000, n)
            self.events(last, PULL, man, -1, GET, clients)
        else:
            self.events(times, PULL, man, tag, GET, clients)
        m = self.manifests[man]
        target = m
        if m.children:
            kids = [c for c, _ in m.children]
            pick = np.where(rng.random(n) < 0.8, kids[0], kids[-1])
            last = last + rng.integers(3_000_000, 60_000_000, n)
            self.events(last, PULL, pick, -1, GET, clients)
            target = self.manifests[kids[0]]
        if blobs and self.spec.blob_event_ratio > 0:
            cold = rng.random(n) < self.spec.blob_event_ratio
            if cold.any():
                bt = last[cold]
                cl = clients[cold] if isinstance(clients, np.ndarray) else clients
                for i, bid in enumerate(target.blobs):
                    self.events(bt + (i + 1) * 40_000_000, PULL, target.id, -1, GET, cl, bid)

    def deploy(self, t: int, man: int, tag: int, *, cluster: str, namespace: str,
               workload: str, replicas: int, by_digest: bool = False, container: str = "app",
               kind: str = "container", record: bool = True) -> None:
        """A deploy event (tagwarden's deploy webhook) and the workload's new image."""
        key = (cluster, namespace, workload)
        wl = self.workloads.get(key)
        if wl is None:
            wl = self.workloads[key] = Workload(cluster, namespace, workload, container, kind)
        wl.history.append((t, man, tag, replicas, by_digest))
        if record and man >= 0:
            self.deploys.append((t, man, tag, CLUSTERS[cluster].environment, cluster,
                                 namespace))

    def undeploy(self, t: int, *, cluster: str, namespace: str, workload: str) -> None:
        wl = self.workloads.get((cluster, namespace, workload))
        if wl is not None:
            wl.history.append((t, -1, -1, 0, False))

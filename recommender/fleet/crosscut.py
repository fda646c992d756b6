"""What touches every repository: workloads' pulls, scanners, janitors, hand deletions.

Order matters and :func:`recommender.fleet.simulate.generate` keeps it: archetypes record
pushes, pulls and deploys; people delete by hand what nothing runs; workloads then pull at
rollout and on node churn; scanners and janitors walk the tags that exist at their time;
finally nothing of a deleted manifest is used after its deletion.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from . import timing
from .clients import CLUSTERS
from .world import DAY, DEL, DELETE, HOUR, MINUTE, NEVER, SECOND, TAGDEL, World

__all__ = ["Run", "TagIntervals", "delete_by_hand", "janitors", "runs_of", "scanners",
           "settle_workloads"]

CHURN_PER_REPLICA_DAY = 0.02  # a pod rescheduled onto a node without the image
CHURN_DAEMON = 0.003  # DaemonSets move only when nodes are replaced
_KEEP = re.compile(r"^(v?\d+\.\d+.*|latest|stable|main)$")


@dataclass(frozen=True, slots=True)
class Run:
    cluster: str
    namespace: str
    workload: str
    container: str
    kind: str
    man: int
    tag: int
    start: int
    end: int
    replicas: int
    by_digest: bool


def runs_of(w: World) -> list[Run]:
    """Intervals during which a workload ran one manifest (from its deploy history)."""
    out = []
    for key in sorted(w.workloads):
        wl = w.workloads[key]
        hist = sorted(wl.history, key=lambda h: h[0])
        for i, (t, man, tag, replicas, by_digest) in enumerate(hist):
            end = hist[i + 1][0] if i + 1 < len(hist) else w.end_ns
            if man < 0 or replicas <= 0 or end <= t or t >= w.end_ns:
                continue
            out.append(Run(wl.cluster, wl.namespace, wl.name, wl.container, wl.kind, man, tag,
                           t, end, replicas, by_digest))
    return out


def delete_by_hand(w: World, rng: np.random.Generator, runs: list[Run], share: float = 0.2
                   ) -> int:
    """People clean up now and then: old manifests with only build/dev tags that nothing runs."""
    busy: dict[int, int] = {}
    for run in runs:
        busy[run.man] = max(busy.get(run.man, 0), run.end)
    for t_assign, _, _, man in w.assignments:  # tagged again later (a release of a build)
        busy[man] = max(busy.get(man, 0), t_assign + 7 * DAY)
    by_repo: dict[int, list[int]] = {}
    for m in w.manifests:
        if m.kind != "signature":
            by_repo.setdefault(m.repo, []).append(m.id)
    children = {c for m in w.manifests for c, _ in m.children}
    current = TagIntervals(w)
    deleted = 0
    for rid, kind in enumerate(w.repo_kind):
        if kind not in ("ci", "experiment", "release") or rng.random() >= share:
            continue
        who = w.clients.human(int(rng.integers(0, 10)), "curl")
        t = w.start_ns + int(rng.uniform(30, 120) * DAY)
        while t < w.end_ns:
            tags_now = current.tags_at(t, rid)
            # a person deletes some of what looks old to them, never all of it
            keep_share = rng.uniform(0.4, 0.8)
            for man in by_repo.get(rid, []):
                m = w.manifests[man]
                if (man in children or m.pushed_ns > t - 45 * DAY or m.deleted_ns < NEVER
                        or busy.get(man, 0) > t - 7 * DAY):
                    continue
                tags = tags_now.get(man, [])
                if any(_KEEP.match(w.tags[x]) for x in tags) or rng.random() < keep_share:
                    continue
                _delete(w, t + deleted % 600 * SECOND, man, tags, who)
                deleted += 1
                for ref in w.referrers_of.get(man, ()):  # its signature and attestation
                    if w.manifests[ref].deleted_ns == NEVER:
                        _delete(w, t + deleted % 600 * SECOND + SECOND, ref,
                                [w.referrer_tag(ref)], who)
            t += int(rng.uniform(30, 120) * DAY)
    return deleted


def _delete(w: World, t: int, man: int, tags: list[int], who: int) -> None:
    # DELETE by digest fires one delete for the digest, then one per tag that pointed at it
    w.event(t, DELETE, man, -1, DEL, who)
    for k, tag in enumerate(tags):
        w.event(t + (k + 1) * 1_000_000, TAGDEL, man, tag, DEL, who)
    w.manifests[man].deleted_ns = t


class TagIntervals:
    """When each tag pointed at which manifest: [start, end) per assignment."""

    def __init__(self, w: World) -> None:
        a = np.array(w.assignments, dtype=np.int64).reshape(-1, 4)
        order = np.lexsort((a[:, 0], a[:, 2], a[:, 1]))  # by repo, tag, time
        a = a[order]
        self.t, self.repo, self.tag, self.man = a[:, 0], a[:, 1], a[:, 2], a[:, 3]
        same_next = np.zeros(len(a), dtype=bool)
        same_next[:-1] = (self.repo[1:] == self.repo[:-1]) & (self.tag[1:] == self.tag[:-1])
        nxt = np.full(len(a), NEVER, dtype=np.int64)
        nxt[:-1] = np.where(same_next[:-1], self.t[1:], NEVER)
        deleted = np.array([m.deleted_ns for m in w.manifests], dtype=np.int64)
        self.end = np.minimum(nxt, deleted[self.man]) if len(a) else nxt

    def valid_at(self, t: int) -> np.ndarray:
        return np.nonzero((self.t <= t) & (t < self.end))[0]

    def tags_at(self, t: int, repo: int) -> dict[int, list[int]]:
        idx = self.valid_at(t)
        idx = idx[self.repo[idx] == repo]
        out: dict[int, list[int]] = {}
        for i in idx:
            out.setdefault(int(self.man[i]), []).append(int(self.tag[i]))
        return out


def settle_workloads(w: World, rng: np.random.Generator, runs: list[Run]) -> None:
    """Rollout pulls (one per replica on a node), node-churn pulls, signature checks."""
    prev: dict[tuple[str, str, str], int] = {}
    for run in runs:
        key = (run.cluster, run.namespace, run.workload)
        if run.kind == "job":
            continue
        cl = CLUSTERS[run.cluster]
        tag = -1 if run.by_digest else run.tag
        # containerd resolves a tag with HEAD then GETs the digest; cri-o GETs by tag
        style = "head_get" if cl.runtime == "containerd" else "get"
        if prev.get(key) != run.man:
            n = min(run.replicas, cl.nodes)
            nodes = rng.choice(cl.nodes, size=n, replace=False)
            times = run.start + np.sort(rng.integers(5 * SECOND, 3 * MINUTE, n))
            clients = np.array([w.clients.node(run.cluster, int(i)) for i in nodes])
            w.pull(times, run.man, tag, style, clients, rng)
            sig = w.signature_of.get(run.man)
            if sig is not None:  # the admission controller verifies the signature first
                w.pull(np.array([run.start - 2 * SECOND]), sig, w.sig_tag(run.man), "get",
                       w.clients.policy_controller(run.cluster), rng, blobs=False)
        prev[key] = run.man
        rate = (CHURN_DAEMON if run.namespace == "kube-system" else CHURN_PER_REPLICA_DAY)
        churn = timing.poisson(rng, run.start + HOUR, run.end, rate * run.replicas)
        if len(churn):
            nodes = rng.integers(0, cl.nodes, len(churn))
            clients = np.array([w.clients.node(run.cluster, int(i)) for i in nodes])
            w.pull(churn, run.man, tag, style, clients, rng)


def _children_of(w: World) -> tuple[np.ndarray, np.ndarray]:
    first = np.full(len(w.manifests), -1, dtype=np.int32)
    second = np.full(len(w.manifests), -1, dtype=np.int32)
    for m in w.manifests:
        if m.children:
            first[m.id] = m.children[0][0]
            second[m.id] = m.children[-1][0]
    return first, second


def scanners(w: World, rng: np.random.Generator, tags: TagIntervals) -> None:
    """Trivy scans each new tag after push and every tagged manifest on a schedule; Clair
    re-indexes some repositories monthly by digest. None of it is use."""
    from .world import GET, PULL

    if not len(tags.t):
        return
    is_sig = np.array([t.endswith((".sig", ".att")) for t in w.tags], dtype=bool)
    first, second = _children_of(w)
    trivy = w.clients.scanner("trivy")
    clair = w.clients.scanner("clair")
    # on push: the first time each manifest gets a tag
    _, first_idx = np.unique(tags.man, return_index=True)
    sel = first_idx[~is_sig[tags.tag[first_idx]]]
    t0 = tags.t[sel] + rng.integers(MINUTE, 20 * MINUTE, len(sel))
    _scan(w, t0, tags.man[sel], tags.tag[sel], trivy, first, second)
    every = w.spec.scanner_every_days * DAY
    for at in range(w.window_ns + 2 * HOUR, w.end_ns, every):
        idx = tags.valid_at(at)
        idx = idx[~is_sig[tags.tag[idx]]]
        # one pass takes hours; a manifest with several tags is scanned once per tag
        when = at + rng.integers(0, 4 * HOUR, len(idx))
        _scan(w, when, tags.man[idx], tags.tag[idx], trivy, first, second)
    clair_repos = rng.random(len(w.repos)) < 0.3
    for at in range(w.window_ns + 26 * HOUR, w.end_ns, 30 * DAY):
        idx = tags.valid_at(at)
        idx = idx[clair_repos[tags.repo[idx]] & ~is_sig[tags.tag[idx]]]
        mans = np.unique(tags.man[idx])
        when = at + rng.integers(0, 6 * HOUR, len(mans))
        w.events(when, PULL, mans, -1, GET, clair)


def _scan(w: World, t: np.ndarray, man: np.ndarray, tag: np.ndarray, client: int,
          first: np.ndarray, second: np.ndarray) -> None:
    from .world import GET, PULL

    w.events(t, PULL, man, tag, GET, client)
    for kids in (first, second):  # scanners look at every platform of an index
        k = kids[man]
        has = k >= 0
        w.events(t[has] + 50_000_000, PULL, k[has], -1, GET, client)


def janitors(w: World, rng: np.random.Generator, tags: TagIntervals, share: float = 0.25
             ) -> None:
    """A regclient bot HEADs every tag of some repositories weekly; a crane script checks
    `latest` of a few daily. HEADs, by tools: not use."""
    from .world import HEAD, PULL

    if not len(tags.t):
        return
    chosen = rng.random(len(w.repos)) < share
    bot = w.clients.janitor("regclient")
    for at in range(w.window_ns + 3 * HOUR, w.end_ns, 7 * DAY):
        idx = tags.valid_at(at)
        idx = idx[chosen[tags.repo[idx]]]
        when = at + np.sort(rng.integers(0, HOUR, len(idx)))
        w.events(when, PULL, tags.man[idx], tags.tag[idx], HEAD, bot)
    crane = w.clients.janitor("crane")
    latest = w._tag_ids.get("latest")
    if latest is None:
        return
    daily = rng.random(len(w.repos)) < share / 2
    with_latest = np.unique(tags.repo[tags.tag == latest])
    if len(with_latest) and not daily[with_latest].any():  # someone always has such a script
        daily[with_latest[0]] = True
    for at in range(w.window_ns + 5 * HOUR, w.end_ns, DAY):
        idx = tags.valid_at(at)
        idx = idx[daily[tags.repo[idx]] & (tags.tag[idx] == latest)]
        w.events(at + rng.integers(0, MINUTE, len(idx)), PULL, tags.man[idx], latest, HEAD,
                 crane)

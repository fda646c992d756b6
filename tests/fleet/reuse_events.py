"""Long-gap reuse read back from a simulated fleet's events and deploys (not from the knob).

Each function counts one mechanism of ``recommender/fleet/reuse.py`` in what the generator
produced, the way someone looking at a registry's history would see it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from recommender.fleet.clients import PRODUCTION
from recommender.fleet.simulate import _visible, build_world
from recommender.fleet.spec import FleetSpec
from recommender.fleet.world import DAY, PULL, World

NODES = {"containerd", "cri-o"}
BUILDERS = {"buildkit", "kaniko", "docker"}
PEOPLE = {"docker-desktop", "podman"}


@dataclass
class Seen:
    """A simulated fleet with its visible events as columns."""

    w: World
    cols: dict[str, np.ndarray]

    @classmethod
    def of(cls, spec: FleetSpec) -> Seen:
        w = build_world(spec)[0]
        return cls(w, _visible(w, w.columns()))

    def repos(self, kind: str) -> set[int]:
        return {i for i, k in enumerate(self.w.repo_kind) if k == kind}

    def pulls(self, repos: set[int], clients: set[str]) -> list[tuple[int, int, int]]:
        """(time, manifest, tag) of manifest pulls into ``repos`` by ``clients`` kinds."""
        c = self.cols
        pick = (c["action"] == PULL) & (c["blob"] < 0)
        out = []
        items, manifests = self.w.clients.items, self.w.manifests
        for t, man, tag, client in zip(c["t"][pick].tolist(), c["man"][pick].tolist(),
                                       c["tag"][pick].tolist(), c["client"][pick].tolist(),
                                       strict=True):
            if manifests[man].repo in repos and items[client].kind in clients:
                out.append((t, man, tag))
        return out

    def superseded_release(self) -> dict[int, int]:
        """Release manifest -> when ``latest`` moved on from it (the next release)."""
        latest = self.w.tag_id("latest")
        repos = self.repos("release")
        moves: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for t, repo, tag, man in self.w.assignments:
            if repo in repos and tag == latest:
                moves[repo].append((t, man))
        out = {}
        for seq in moves.values():
            seq.sort()
            for (_, man), (t_next, _) in zip(seq, seq[1:], strict=False):
                out[man] = t_next
        return out

    def superseded_build(self, kind: str) -> dict[int, int]:
        """Top manifest of a ``kind`` repository -> when the repository's next one was pushed."""
        repos = self.repos(kind)
        children = {c for m in self.w.manifests for c, _ in m.children}
        tops: dict[int, list[tuple[int, int]]] = defaultdict(list)
        for m in self.w.manifests:
            if m.repo in repos and m.kind != "signature" and m.id not in children:
                tops[m.repo].append((m.pushed_ns, m.id))
        out = {}
        for seq in tops.values():
            seq.sort()
            for (_, man), (t_next, _) in zip(seq, seq[1:], strict=False):
                out[man] = t_next
        return out


def late_rollbacks(s: Seen, min_days: float) -> int:
    """Production deploys of a release, in its own namespace, ``min_days`` after the next
    release superseded it."""
    sup = s.superseded_release()
    team = {i: s.w.repo_traits[i]["team"] for i in s.repos("release")}
    return sum(1 for t, man, _tag, env, _cl, ns in s.w.deploys
               if env == "production" and man in sup and ns == team[s.w.manifests[man].repo]
               and t - sup[man] >= min_days * DAY)


def _runs(s: Seen, namespace: str, min_days: float, repos: set[int]) -> int:
    """Workloads in namespaces starting with ``namespace`` that ran a manifest of ``repos``
    for at least ``min_days``."""
    count = 0
    for (_cl, ns, _name), wl in s.w.workloads.items():
        if not ns.startswith(namespace):
            continue
        hist = sorted(wl.history)
        for (t, man, *_), (t_end, *_) in zip(hist, hist[1:], strict=False):
            if man >= 0 and s.w.manifests[man].repo in repos and t_end - t >= min_days * DAY:
                count += 1
    return count


def release_pins(s: Seen, min_days: float = 60) -> int:
    """Another team's workload running a release by digest for months."""
    return _runs(s, "team-", min_days, s.repos("release"))


def mirror_pins(s: Seen, min_days: float = 60) -> int:
    """Consumer teams' workloads running one mirrored upstream version for months."""
    return _runs(s, "team-", min_days, s.repos("mirror"))


def cron_periods(s: Seen) -> list[float]:
    """Each cron repository's median days between two scheduled runs (node pulls by tag)."""
    out = []
    for repo in sorted(s.repos("cron")):
        days = sorted({t // DAY for t, _, tag in s.pulls({repo}, NODES) if tag >= 0})
        if len(days) >= 2:
            out.append(float(np.median(np.diff(days))))
    return out


def manual_reruns(s: Seen, min_days: float = 30) -> int:
    """Node pulls of a job version ``min_days`` after the job's next version was pushed."""
    sup = s.superseded_build("cron")
    return sum(1 for t, man, _ in s.pulls(s.repos("cron"), NODES)
               if man in sup and t - sup[man] >= min_days * DAY)


def base_long_tails(s: Seen, min_days: float = 60) -> int:
    """Base versions still pulled by builds ``min_days`` after the next version shipped."""
    sup = s.superseded_build("base")
    return len({man for t, man, _ in s.pulls(s.repos("base"), BUILDERS)
                if man in sup and t - sup[man] >= min_days * DAY})


def experiment_revisits(s: Seen, min_days: float = 30) -> int:
    """Experiments pulled again by a person after ``min_days`` without a pull."""
    count = 0
    for repo in s.repos("experiment"):
        times = sorted(t for t, _, _ in s.pulls({repo}, PEOPLE))
        if len(times) >= 2 and max(np.diff(times)) >= min_days * DAY:
            count += 1
    return count


def dr_drills(s: Seen, min_days: float = 60) -> int:
    """Deploys into a DR namespace of a release superseded ``min_days`` before."""
    sup = s.superseded_release()
    return sum(1 for t, man, _tag, env, cl, ns in s.w.deploys
               if ns.startswith("dr-") and cl in PRODUCTION and env == "production"
               and man in sup and t - sup[man] >= min_days * DAY)


MECHANISMS = {
    "late rollbacks (>= 8 weeks after superseded)": lambda s: late_rollbacks(s, 56),
    "release pins (>= 60 days)": release_pins,
    "mirror pins (>= 60 days)": mirror_pins,
    "cron repos run monthly or rarer": lambda s: sum(p >= 28 for p in cron_periods(s)),
    "manual re-runs (>= 30 days after superseded)": manual_reruns,
    "base versions pulled >= 60 days after superseded": base_long_tails,
    "experiments revisited after >= 30 idle days": experiment_revisits,
    "DR drills (release superseded >= 60 days)": dr_drills,
}

"""Infrastructure archetypes: cron jobs, base images, upstream mirrors, cluster daemons.

Their rhythms are slow and regular, which is exactly what an idle-days rule gets wrong: a
quarterly job's image looks dead for 89 days, a DaemonSet on cached images never pulls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import content, timing
from .build import BASE_REBUILD_DAYS, Repo, build, family_layers
from .clients import CLUSTERS, PRODUCTION
from .world import DAY, HOUR, MINUTE

__all__ = ["BaseParams", "CronParams", "DaemonParams", "MirrorParams", "base", "cron",
           "daemon", "mirror"]


@dataclass(frozen=True)
class CronParams:
    periods_days: tuple[float, ...] = (7.0, 14.0, 30.0, 91.0)  # weekly .. quarterly
    rebuild_every_days: tuple[float, float] = (30.0, 200.0)
    floating_tag: float = 0.4  # the CronJob uses `stable` rather than the version tag
    keeps_pods: float = 0.5  # completed job pods stay listed (successfulJobsHistoryLimit)
    both_regions: float = 0.5
    manual_rerun: float = 0.0  # superseded versions re-run once by hand (a backfill) ...
    rerun_after_days: tuple[float, float] = (30.0, 180.0)  # ... this long after


@dataclass(frozen=True)
class BaseParams:
    build_pulls_per_weekday: tuple[float, float] = (5.0, 40.0)
    tail_share: float = 0.3  # pull rate right after being superseded, relative to current
    tail_half_life_days: tuple[float, float] = (7.0, 45.0)
    legacy_pin: float = 0.25  # a legacy build keeps pulling this exact version weekly
    legacy_days: tuple[float, float] = (60.0, 400.0)
    multiarch: float = 0.6


@dataclass(frozen=True)
class MirrorParams:
    upstream_every_days: tuple[float, float] = (10.0, 45.0)
    adopt: float = 0.4  # production moves to a new upstream version (infra lags)
    adopt_after_days: tuple[float, float] = (1.0, 30.0)
    multiarch: float = 0.8
    pinned: float = 0.0  # versions a few consumers pin by their exact tag ...
    pinned_days: tuple[float, float] = (60.0, 300.0)  # ... for this long


@dataclass(frozen=True)
class DaemonParams:
    release_every_days: tuple[float, float] = (45.0, 180.0)
    rollout_days: tuple[float, float] = (0.5, 14.0)  # staging first, then production


def cron(r: Repo, p: CronParams = CronParams()) -> None:
    """A job image pulled by a CronJob every period; rebuilt now and then."""
    w, rng = r.world, r.rng
    period = float(rng.choice(p.periods_days))
    floating = rng.random() < p.floating_tag
    keeps = rng.random() < p.keeps_pods
    clusters = PRODUCTION if rng.random() < p.both_regions else PRODUCTION[:1]
    r.extra.update(period_days=period, floating_tag=bool(floating), keeps_pods=bool(keeps),
                   clusters=list(clusters))
    stable = w.tag_id("stable")
    builds: list[tuple[int, int, int]] = []
    versions: list[int] = []
    t = w.start_ns + int(rng.uniform(0, 5) * DAY)
    while t < w.end_ns:
        ver = w.tag_id(f"{2024 + (t - w.start_ns) // (365 * DAY) + 1}.{len(builds) + 1}")
        man = build(r, t, [ver, stable] if floating else [ver])
        builds.append((t, man, stable if floating else ver))
        versions.append(ver)
        t += int(rng.uniform(*p.rebuild_every_days) * DAY)
    # one schedule ("0 3 * * 1"), the same in every cluster that runs the job
    schedule = timing.periodic(rng, w.start_ns, w.end_ns, period, jitter_hours=0.0)
    for cl in clusters:
        runs = schedule + rng.integers(0, 5 * MINUTE, len(schedule))  # controller lag
        for k, (bt, man, tag) in enumerate(builds):
            until = builds[k + 1][0] + DAY if k + 1 < len(builds) else w.end_ns
            w.deploy(bt + DAY, man, tag, cluster=cl, namespace="jobs", workload=r.short,
                     replicas=0, record=True)
            mine = runs[(runs >= bt + DAY) & (runs < until)]
            if k == 0:
                mine = runs[runs < until]
            for run in mine:
                # each run is a new pod, usually on another node: the runtime pulls the tag
                node = w.clients.node(cl, int(rng.integers(0, CLUSTERS[cl].nodes)))
                style = "head_get" if CLUSTERS[cl].runtime == "containerd" else "get"
                w.pull(np.array([int(run)]), man, tag, style, node, rng)
                if keeps:  # the completed pod stays listed until the next run replaces it
                    w.deploy(int(run), man, tag, cluster=cl, namespace="jobs",
                             workload=f"{r.short}-run", replicas=1, kind="job", record=False)
    _manual_reruns(r, builds, versions, clusters[0], p)


def _manual_reruns(r: Repo, builds: list[tuple[int, int, int]], versions: list[int],
                   cluster: str, p: CronParams) -> None:
    """Someone re-runs a superseded job version by hand (``kubectl create job`` with the old
    image, to backfill with the code that produced the data): one pod, by the version tag."""
    w, rng = r.world, r.reuse_rng
    style = "head_get" if CLUSTERS[cluster].runtime == "containerd" else "get"
    reruns = 0
    for k in range(len(builds) - 1):
        if rng.random() >= p.manual_rerun:
            continue
        when = builds[k + 1][0] + int(rng.uniform(*p.rerun_after_days) * DAY)
        if when >= w.end_ns:
            continue
        node = w.clients.node(cluster, int(rng.integers(0, CLUSTERS[cluster].nodes)))
        w.pull(np.array([when]), builds[k][1], versions[k], style, node, rng)
        w.deploy(when, builds[k][1], versions[k], cluster=cluster, namespace="jobs",
                 workload=f"{r.short}-manual", replicas=1, kind="job", record=False)
        w.undeploy(when + DAY, cluster=cluster, namespace="jobs", workload=f"{r.short}-manual")
        reruns += 1
    r.extra["manual_reruns"] = reruns


def base(r: Repo, p: BaseParams = BaseParams()) -> None:
    """Base images: pulled by builds while current, a decaying tail after, legacy pins."""
    w, rng = r.world, r.rng
    family = r.family
    r.multiarch = rng.random() < p.multiarch
    line = f"{int(rng.integers(1, 4))}.{int(rng.integers(8, 22))}"
    moving = [w.tag_id(line), w.tag_id("latest")]
    rate = rng.uniform(*p.build_pulls_per_weekday)
    half = rng.uniform(*p.tail_half_life_days)
    r.extra.update(build_pulls_per_weekday=round(rate, 2), tail_half_life_days=round(half, 1),
                   multiarch=bool(r.multiarch))
    versions: list[tuple[int, int, int]] = []
    t = w.start_ns + int(rng.uniform(0, 3) * DAY)
    patch = int(rng.integers(0, 5))
    while t < w.end_ns:
        exact = w.tag_id(f"{line}.{patch}")
        media = content.MEDIA[r.flavor]["layer"]
        layers = {arch: family_layers(w, r.rid, family, t, arch, media)
                  for arch in ("amd64", "arm64")}
        if r.multiarch:
            kids = []
            for arch in ("amd64", "arm64"):
                kid = w.image(r.rid, t, layers[arch], flavor=r.flavor, platform=f"linux/{arch}")
                w.push(t - MINUTE, kid, -1, r.pusher)
                kids.append(kid)
            man = w.index(r.rid, t, kids, flavor=r.flavor)
            w.push(t, man, exact, r.pusher)
        else:
            man = build(r, t, [exact], layers=layers["amd64"], sign=False)
        for k, tag in enumerate(moving):
            w.retag(t + (k + 1) * 1_000_000_000, man, tag, r.pusher)
        versions.append((t, man, exact))
        patch += 1
        t += int(rng.uniform(0.6, 1.4) * BASE_REBUILD_DAYS * DAY)
    builders = [w.clients.ci(i, str(rng.choice(["buildkit", "kaniko", "docker"])))
                for i in range(6)]
    for k, (vt, man, exact) in enumerate(versions):
        until = versions[k + 1][0] if k + 1 < len(versions) else w.end_ns
        # current: builds resolve the moving line tag
        ts = timing.workdays(rng, vt, until, rate)
        cl = np.array(builders)[rng.integers(0, len(builders), len(ts))]
        w.pull(ts, man, moving[0], "head_get", cl, rng, blobs=False)
        if until < w.end_ns:
            # superseded: pinned Dockerfiles and caches keep pulling the exact tag, decaying
            tail = timing.decaying(rng, until, w.end_ns, rate * p.tail_share, half)
            cl = np.array(builders)[rng.integers(0, len(builders), len(tail))]
            w.pull(tail, man, exact, "get", cl, rng, blobs=False)
            if rng.random() < p.legacy_pin:
                stop = min(w.end_ns, until + int(rng.uniform(*p.legacy_days) * DAY))
                weekly = timing.periodic(rng, until, stop, 7.0, jitter_hours=6)
                w.pull(weekly, man, exact, "get", builders[0], rng, blobs=False)


UPSTREAMS = ("nginx", "redis", "postgres", "busybox", "envoy", "memcached", "rabbitmq",
             "haproxy", "traefik", "grafana", "prometheus", "vault")


def mirror(r: Repo, p: MirrorParams = MirrorParams()) -> None:
    """An upstream image replicated by a mirroring job; production adopts versions late."""
    w, rng = r.world, r.rng
    r.pusher = w.clients.mirror()
    r.multiarch = rng.random() < p.multiarch
    r.signed = False
    r.extra.update(multiarch=bool(r.multiarch), signed=False)
    version = [int(rng.integers(1, 8)), int(rng.integers(0, 30)), 0]
    moving = [w.tag_id(f"{version[0]}.{version[1]}"), w.tag_id("latest")]
    replicas = int(rng.integers(2, 5))
    t = w.start_ns + int(rng.uniform(0, 5) * DAY)
    adopted: list[tuple[int, int, int]] = []
    pins = 0
    while t < w.end_ns:
        if rng.random() < 0.2:
            version = [version[0], version[1] + 1, 0]
            moving[0] = w.tag_id(f"{version[0]}.{version[1]}")
        else:
            version[2] += 1
        exact = w.tag_id(".".join(map(str, version)))
        man = build(r, t, [exact, *moving])
        # staging follows upstream at once; production adopts some versions, late
        w.deploy(t + 2 * HOUR, man, exact, cluster="stg-1", namespace="platform",
                 workload=r.short, replicas=1)
        if not adopted or rng.random() < p.adopt:
            at = t + int(rng.uniform(*p.adopt_after_days) * DAY)
            for cl in PRODUCTION:
                w.deploy(at, man, exact, cluster=cl, namespace="platform", workload=r.short,
                         replicas=replicas)
            adopted.append((at, man, exact))
        pins += _pin_mirrored(r, t, man, exact, p)
        t += int(rng.uniform(*p.upstream_every_days) * DAY)
    r.extra["pinned_versions"] = pins


CONSUMERS = ("orders", "billing", "search", "auth", "reports", "ledger", "feeds", "media")


def _pin_mirrored(r: Repo, t: int, man: int, exact: int, p: MirrorParams) -> int:
    """A few consumer teams pin this upstream version by its exact tag in their own charts
    (``redis:7.2.4``) and keep it for months while the mirror moves on; returns 1 if so."""
    w, rng = r.world, r.reuse_rng
    if rng.random() >= p.pinned:
        return 0
    for _ in range(int(rng.integers(1, 4))):
        consumer = str(rng.choice(CONSUMERS))
        cl = str(rng.choice(PRODUCTION))
        start = t + int(rng.uniform(1, 30) * DAY)
        workload = f"{consumer}-{r.short}-{w.tags[exact]}"
        w.deploy(start, man, exact, cluster=cl, namespace=f"team-{consumer}",
                 workload=workload, replicas=int(rng.integers(1, 3)))
        w.undeploy(start + int(rng.uniform(*p.pinned_days) * DAY), cluster=cl,
                   namespace=f"team-{consumer}", workload=workload)
    return 1


DAEMONS = ("log-agent", "node-exporter", "ingress-controller", "cert-manager", "dns-cache",
           "csi-driver", "metrics-agent", "policy-agent")


def daemon(r: Repo, p: DaemonParams = DaemonParams()) -> None:
    """A DaemonSet on every node, updated rarely: pulls only at rollout, then runs cached."""
    w, rng = r.world, r.rng
    version = [int(rng.integers(0, 3)), int(rng.integers(0, 20)), 0]
    t = w.start_ns + int(rng.uniform(0, 20) * DAY)
    first = True
    while t < w.end_ns:
        if rng.random() < 0.3:
            version = [version[0], version[1] + 1, 0]
        else:
            version[2] += 1
        tag = w.tag_id("v" + ".".join(map(str, version)))
        man = build(r, t, [tag])
        at = t + int(rng.uniform(0, 2) * DAY)
        for cl in ("stg-1", *PRODUCTION):
            w.deploy(at, man, tag, cluster=cl, namespace="kube-system", workload=r.short,
                     replicas=CLUSTERS[cl].nodes)
            at += 0 if first else int(rng.uniform(*p.rollout_days) * DAY / 2)
        first = False
        t += int(rng.uniform(*p.release_every_days) * DAY)


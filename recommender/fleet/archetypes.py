"""Application archetypes: per-commit CI builds, semver releases, abandoned experiments.

Each archetype is one function ``run(repo)`` that simulates a repository over the fleet's
window through :class:`~recommender.fleet.world.World`. Per-repository parameters are drawn
from the ranges in the ``*Params`` classes (documented in ``data/README.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from . import timing
from .build import Repo, build
from .clients import PRODUCTION
from .world import DAY, HOUR, MINUTE, SECOND

__all__ = ["CiParams", "ExperimentParams", "ReleaseParams", "ci", "experiment", "release"]


@dataclass(frozen=True)
class CiParams:
    builds_per_weekday: tuple[float, float] = (1.0, 6.0)
    tag_styles: tuple[str, ...] = ("sha", "build", "date", "branch")
    floating_main: float = 0.7  # share of repositories whose main builds also move `main`
    floating_only: float = 0.4  # ... that push main builds as `main` only (untagged leftovers)
    pr_share: tuple[float, float] = (0.1, 0.4)  # share of builds that are PR images
    pr_moving_only: float = 0.5  # PR images tagged `pr-<n>` only (each push untags the last)
    preview_envs: float = 0.3  # repositories deploying each PR to a preview namespace
    continuous_delivery: float = 0.35  # repositories promoting some main builds to production
    promote_share: float = 0.25  # ... share of main builds promoted
    quick_rollback: float = 0.04  # production deploys rolled back within hours
    debug_pull: float = 0.03  # builds pulled again by a person ~a week later (inspection)


@dataclass(frozen=True)
class ReleaseParams:
    builds_per_weekday: tuple[float, float] = (0.5, 4.0)
    release_every_days: tuple[float, float] = (7.0, 35.0)
    main_only: float = 0.25  # main builds tagged `main` only (no SHA tag): untagged leftovers
    v_prefix: float = 0.6  # `v1.2.3` rather than `1.2.3`
    minor_tags: float = 0.4  # also move `1.2`
    stable_tag: float = 0.4  # also move `stable`
    prerelease: float = 0.25  # release candidates before a minor/major, deployed to staging
    quick_rollback: float = 0.06  # back to the previous release within hours, then a hotfix
    late_rollback: float = 0.03  # back to one of the 3 previous releases 2-8 weeks later
    late_rollback_days: tuple[float, float] = (14.0, 56.0)  # ... after it was superseded
    pinned: float = 0.1  # another team pins this version (by digest) for 2-8 months
    human_latest_per_day: float = 0.25  # people pulling `latest` on their machines
    dr_drill: float = 0.0  # repositories whose team restores last quarter's release quarterly


@dataclass(frozen=True)
class ExperimentParams:
    active_days: tuple[float, float] = (2.0, 30.0)
    pushes: tuple[int, int] = (1, 16)
    moving_tag: float = 0.5  # reuses one tag (`test`, `dev`, `latest`): untagged leftovers
    sandbox_deploy: float = 0.4  # deployed to a sandbox namespace while active
    revisit: float = 0.15  # pulled again 1-10 months after abandonment


def _sha(rng: np.random.Generator) -> str:
    return f"{int(rng.integers(0, 2**40)):010x}"[:7]


def _ci_tag(r: Repo, style: str, t: int, sha: str) -> str:
    if style == "sha":
        return sha
    if style == "build":
        return f"build-{r.builds + 1000}" if r.extra.get("build_prefix") else str(r.builds + 1000)
    if style == "date":
        return datetime.fromtimestamp(t // SECOND, UTC).strftime("%Y%m%d-%H%M") + "-" + sha[:4]
    return f"main-{sha}"


def _promote(r: Repo, t: int, man: int, tag: int, replicas: int, history: list[tuple[int, int]],
             quick_rollback: float, clusters: tuple[str, ...] = PRODUCTION) -> None:
    """Deploy to production clusters; sometimes roll back to the previous version within hours."""
    w = r.world
    for i, cl in enumerate(clusters):
        w.deploy(t + i * 20 * MINUTE, man, tag, cluster=cl, namespace=r.team, workload=r.short,
                 replicas=replicas)
    if history and r.rng.random() < quick_rollback:
        back_t = t + int(r.rng.uniform(0.3, 12) * HOUR)
        prev_man, prev_tag = history[-1]
        for cl in clusters:
            w.deploy(back_t, prev_man, prev_tag, cluster=cl, namespace=r.team,
                     workload=r.short, replicas=replicas)
    history.append((man, tag))


def ci(r: Repo, p: CiParams = CiParams()) -> None:
    """Per-commit builds pulled by CI, deployed to staging; PR images; `main` moving."""
    w, rng = r.world, r.rng
    style = str(rng.choice(p.tag_styles))
    r.extra["build_prefix"] = bool(rng.random() < 0.5)
    floating = rng.random() < p.floating_main
    only_floating = floating and rng.random() < p.floating_only
    pr_share = rng.uniform(*p.pr_share)
    pr_moving = rng.random() < p.pr_moving_only
    preview = rng.random() < p.preview_envs
    cd = rng.random() < p.continuous_delivery
    replicas = int(rng.integers(2, 6))
    r.extra.update(tag_style=style, floating_main=bool(floating),
                   floating_only=bool(only_floating), pr_share=round(pr_share, 3),
                   pr_moving_only=bool(pr_moving), preview_envs=bool(preview),
                   continuous_delivery=bool(cd))
    main_tag = w.tag_id("main")
    prs: dict[int, tuple[int, int]] = {}  # pr number -> (opened, last build)
    pr_no = int(rng.integers(10, 500))
    prod_history: list[tuple[int, int]] = []
    runners = [w.clients.ci(i, str(rng.choice(["docker", "buildkit", "kaniko"])))
               for i in range(int(rng.integers(2, 6)))]
    for t in timing.workdays(rng, w.start_ns, w.end_ns, rng.uniform(*p.builds_per_weekday)):
        t = int(t)
        sha = _sha(rng)
        is_pr = rng.random() < pr_share
        if is_pr:
            open_prs = [n for n, (o, _) in prs.items() if t - o < 5 * DAY]
            n = int(rng.choice(open_prs)) if open_prs and rng.random() < 0.6 else pr_no
            if n == pr_no:
                pr_no += 1
                prs[n] = (t, t)
            prs[n] = (prs[n][0], t)
            tags = [w.tag_id(f"pr-{n}")] + ([] if pr_moving else [w.tag_id(f"pr-{n}-{sha}")])
        elif only_floating:
            tags = [main_tag]
        else:
            tags = [w.tag_id(_ci_tag(r, style, t, sha))] + ([main_tag] if floating else [])
        man = build(r, t, tags, sign=r.signed and not is_pr)
        # the pipeline's test stage pulls what it just pushed
        runner = runners[int(rng.integers(0, len(runners)))]
        pulls = t + np.sort(rng.integers(2 * MINUTE, 40 * MINUTE, int(rng.integers(1, 4))))
        style_pull = "get" if w.clients.items[runner].kind in ("docker", "kaniko") else "head_get"
        w.pull(pulls, man, tags[0], style_pull, runner, rng)
        if is_pr:
            if preview:
                w.deploy(t + 15 * MINUTE, man, tags[0], cluster="stg-1",
                         namespace=f"preview-{r.short}", workload=f"pr-{n}", replicas=1)
        else:
            dt = t + int(rng.integers(8, 30)) * MINUTE
            w.deploy(dt, man, tags[0], cluster="stg-1", namespace=r.team, workload=r.short,
                     replicas=1)
            if cd and rng.random() < p.promote_share:
                _promote(r, dt + int(rng.uniform(1, 20) * HOUR), man, tags[0], replicas,
                         prod_history, p.quick_rollback)
        if rng.random() < p.debug_pull:
            later = t + int(rng.exponential(7) * DAY)
            w.pull(np.array([later]), man, tags[0] if tags[0] != main_tag else -1, "get",
                   w.clients.human(int(rng.integers(0, 10)), "docker"), rng)
    if preview:
        for n, (_, last) in prs.items():
            w.undeploy(last + int(rng.uniform(1, 4) * DAY), cluster="stg-1",
                       namespace=f"preview-{r.short}", workload=f"pr-{n}")


def release(r: Repo, p: ReleaseParams = ReleaseParams()) -> None:
    """Semver releases aliasing a main build, deployed to production, rollbacks and pins."""
    w, rng = r.world, r.rng
    prefix = "v" if rng.random() < p.v_prefix else ""
    minor_tags = rng.random() < p.minor_tags
    stable = rng.random() < p.stable_tag
    prerelease = rng.random() < p.prerelease
    replicas = int(rng.integers(2, 7))
    version = [int(rng.integers(0, 4)), int(rng.integers(0, 12)), 0]
    sha_tags = rng.random() >= p.main_only
    r.extra.update(main_only=not sha_tags, v_prefix=prefix == "v", minor_tags=bool(minor_tags),
                   stable_tag=bool(stable), prerelease=bool(prerelease), replicas=replicas)
    latest, main = w.tag_id("latest"), w.tag_id("main")
    runner = w.clients.ci(int(rng.integers(0, 24)), "buildkit")
    mains: list[tuple[int, int]] = []  # (time, manifest) of main builds
    for t in timing.workdays(rng, w.start_ns, w.end_ns, rng.uniform(*p.builds_per_weekday)):
        t = int(t)
        tags = [w.tag_id(_sha(rng)), main] if sha_tags else [main]
        man = build(r, t, tags)
        w.pull(t + np.array([int(rng.integers(3, 30)) * MINUTE]), man, tags[0], "head_get",
               runner, rng)
        w.deploy(t + 25 * MINUTE, man, tags[0], cluster="stg-1", namespace=r.team,
                 workload=r.short, replicas=1)
        mains.append((t, man))
    if not mains:
        return
    history: list[tuple[int, int]] = []
    releases: list[tuple[int, int, int]] = []  # (time, manifest, tag)
    t = w.start_ns + int(rng.uniform(1, p.release_every_days[1]) * DAY)
    times = np.array([m[0] for m in mains])
    while t < w.end_ns:
        i = int(np.searchsorted(times, t)) - 1
        if i < 0:
            t += DAY
            continue
        man = mains[i][1]
        bump = rng.random()
        if bump < 0.05:
            version = [version[0] + 1, 0, 0]
        elif bump < 0.4:
            version = [version[0], version[1] + 1, 0]
        else:
            version[2] += 1
        j = int(np.searchsorted(times, t - 2 * DAY)) - 1  # the build two days earlier
        if prerelease and version[2] == 0 and j >= 0:
            rc = w.tag_id(f"{prefix}{version[0]}.{version[1]}.0-rc.1")
            w.retag(t - 2 * DAY, mains[j][1], rc, r.pusher)
            w.deploy(t - 2 * DAY + HOUR, mains[j][1], rc, cluster="stg-1",
                     namespace=r.team, workload=r.short, replicas=1)
        name = f"{prefix}{version[0]}.{version[1]}.{version[2]}"
        tag = w.tag_id(name)
        aliases = [tag, latest] + ([w.tag_id(f"{prefix}{version[0]}.{version[1]}")]
                                   if minor_tags else []) + ([w.tag_id("stable")] if stable else [])
        for k, a in enumerate(aliases):
            w.retag(t + k * SECOND, man, a, r.pusher)
        deploy_t = t + int(rng.uniform(1, 6) * HOUR)
        _promote(r, deploy_t, man, tag, replicas, history, p.quick_rollback)
        releases.append((t, man, tag))
        # another team pins this exact version by digest for months
        if rng.random() < p.pinned:
            start = deploy_t + int(rng.uniform(1, 20) * DAY)
            ns = f"team-{int(rng.integers(1, 9))}"
            w.deploy(start, man, tag, cluster="prod-eu-1", namespace=ns,
                     workload=f"{r.short}-client", replicas=1, by_digest=True)
            w.undeploy(start + int(rng.uniform(60, 240) * DAY), cluster="prod-eu-1",
                       namespace=ns, workload=f"{r.short}-client")
        t += int(rng.uniform(*p.release_every_days) * DAY)
    # late rollbacks: a regression found weeks after; back to an older release for a few days
    for k in range(len(releases)):
        if k + 1 < len(releases) and k >= 1 and rng.random() < p.late_rollback:
            superseded = releases[k + 1][0]
            back = superseded + int(rng.uniform(*p.late_rollback_days) * DAY)
            target = releases[max(0, k - int(rng.integers(0, 3)))]
            cl = str(rng.choice(PRODUCTION))
            w.deploy(back, target[1], target[2], cluster=cl, namespace=r.team,
                     workload=r.short, replicas=replicas)
            current = [x for x in releases if x[0] <= back + 3 * DAY][-1]
            w.deploy(back + int(rng.uniform(1, 5) * DAY), current[1], current[2], cluster=cl,
                     namespace=r.team, workload=r.short, replicas=replicas)
    # people pull `latest` on their machines while it is current
    for k, (rt, man, _) in enumerate(releases):
        until = releases[k + 1][0] if k + 1 < len(releases) else w.end_ns
        ts = timing.workdays(rng, rt, until, p.human_latest_per_day)
        w.pull(ts, man, latest, "get", w.clients.human(int(rng.integers(0, 10))), rng)
    _dr_drills(r, releases, p.dr_drill)


def _dr_drills(r: Repo, releases: list[tuple[int, int, int]], share: float) -> None:
    """Quarterly disaster-recovery drills: the team restores the release that was current a
    quarter earlier (the backup being tested) into a DR namespace for a few hours."""
    w, rng = r.world, r.reuse_rng
    drills = 0
    if releases and rng.random() < share:
        times = np.array([x[0] for x in releases])
        t = w.start_ns + int(rng.uniform(60, 120) * DAY)
        while t < w.end_ns:
            i = int(np.searchsorted(times, t - 91 * DAY, side="right")) - 1
            current = int(np.searchsorted(times, t, side="right")) - 1
            if 0 <= i < current:  # last quarter's release, superseded since
                _, man, tag = releases[i]
                ns = f"dr-{r.team}"
                w.deploy(t, man, tag, cluster="prod-us-1", namespace=ns, workload=r.short,
                         replicas=1)
                w.undeploy(t + int(rng.uniform(4, 24) * HOUR), cluster="prod-us-1",
                           namespace=ns, workload=r.short)
                drills += 1
            t += int(rng.uniform(84, 98) * DAY)
    r.extra["dr_drills"] = drills


def experiment(r: Repo, p: ExperimentParams = ExperimentParams()) -> None:
    """A burst of pushes by a person, a few pulls, abandoned; sometimes revisited."""
    w, rng = r.world, r.rng
    span = w.end_ns - w.start_ns
    begin = w.start_ns + int(rng.random() * max(span - 3 * DAY, DAY))
    end = min(begin + int(rng.uniform(*p.active_days) * DAY), w.end_ns)
    person = int(rng.integers(0, 10))
    kind = str(rng.choice(["docker-desktop", "podman"]))
    me = w.clients.human(person, kind)
    r.pusher = me
    moving = rng.random() < p.moving_tag
    fixed = w.tag_id(str(rng.choice(["test", "dev", "latest", "wip"])))
    n = int(rng.integers(*p.pushes))
    times = np.sort(rng.integers(begin, max(end, begin + 1), n))
    last = -1
    sandbox = rng.random() < p.sandbox_deploy
    r.extra.update(moving_tag=bool(moving), pushes=n, sandbox_deploy=bool(sandbox),
                   active_days=round((end - begin) / DAY, 1))
    for k, t in enumerate(times):
        t = int(t)
        tag = fixed if moving else w.tag_id(str(rng.choice([f"v0.0.{k + 1}", f"try{k + 1}",
                                                            f"{r.short}-{k + 1}"])))
        last = build(r, t, [tag], sign=False)
        last_tag = tag
        pulls = timing.poisson(rng, t, min(t + 3 * DAY, end + DAY), 1.0)
        w.pull(pulls, last, tag, "get", w.clients.human(person + int(rng.integers(0, 2)), kind),
               rng)
        if sandbox:
            w.deploy(t + 10 * MINUTE, last, tag, cluster="stg-1", namespace="sandbox",
                     workload=r.short, replicas=1)
    if sandbox:
        w.undeploy(end + int(rng.uniform(0, 10) * DAY), cluster="stg-1", namespace="sandbox",
                   workload=r.short)
    r.extra["revisited"] = bool(last >= 0 and rng.random() < p.revisit)
    if r.extra["revisited"]:
        back = end + int(rng.uniform(30, 300) * DAY)
        pulls = back + np.sort(rng.integers(0, 2 * DAY, int(rng.integers(1, 4))))
        w.pull(pulls, last, last_tag, "get", me, rng)

"""Guardrails: absolute rules that keep a manifest whatever the model says.

Each rule that keeps a unit adds a plain-words reason to its ``blocked_by`` list; an empty list
means no guardrail keeps it. Rules (per repository, from the last matching ``[[policy]]``):

- a tag matching a protected glob keeps the digest with all its aliases (deleting by digest
  removes every tag on it);
- keep the last N versions by semantic version -- not push time -- separately for
  production-deployed releases (``keep_production``) and the others (``keep_other``); tags
  without a version (CI builds) keep their newest N by push time;
- never younger than ``min_age`` (re-tagging an old digest, a promotion, resets its age);
- deployed to production within ``keep_deployed_within``;
- running in any cluster's latest pod snapshot;
- declared in a deployment file (``refs.store.declared_references``);
- denied by a person in Slack ("still needed") within ``executor.deny_quiet``: the next
  suggestion must not propose it again, and ``why`` says who kept it and until when;
- an index and its platform manifests, a subject and its signatures, attestations and SBOMs
  are one unit: what keeps one keeps all of them.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from .config import Config, PolicyRule
from .history import History, days, load_history, rows
from .refs.store import declared_references
from .store import tables as t
from .tagkind import classify, parse_semver
from .units import _unit_map, alive_units, current_tags, running_at, tag_spans

__all__ = ["declared_units", "denied_units", "evaluate", "evaluate_history"]

Key = tuple[str, str]


def _fmt_days(value: float) -> str:
    d = int(value)
    return f"{d} day" if d == 1 else f"{d} days"


def declared_units(conn: Connection, at: datetime) -> dict[Key, list[str]]:
    """Declared references from deployment files (``tagwarden refs``) as of ``at``."""
    return declared_references(conn, at=at)


def denied_units(conn: Connection, config: Config, at: datetime) -> dict[Key, list[str]]:
    """Manifests a person denied in the ``executor.deny_quiet`` before ``at`` (latest wins).

    Only denials decided by ``at``: a backtest at a past instant does not see later ones."""
    quiet = config["executor.deny_quiet"]
    b, bi = t.batches, t.batch_items
    rows = conn.execute(
        select(bi.c.repository, bi.c.digest, b.c.decided_by, b.c.decided_at, b.c.reason)
        .join(b, b.c.id == bi.c.batch_id)
        .where(bi.c.state == "denied", b.c.decided_at <= at, b.c.decided_at > at - quiet)
        .order_by(b.c.decided_at, bi.c.id))
    out: dict[Key, list[str]] = {}
    for r in rows:
        said = f" ({r.reason})" if r.reason else ""
        out[(r.repository, r.digest)] = [
            f"kept by a person: denied by {r.decided_by} on {r.decided_at:%Y-%m-%d}{said}; "
            f"not proposed again before {r.decided_at + quiet:%Y-%m-%d}"]
    return out


def evaluate(conn: Connection, config: Config, *, now: datetime,
             candidates: Iterable[Key] | None = None) -> dict[Key, list[str]]:
    """``blocked_by`` of every alive manifest (or of ``candidates``) as of ``now``."""
    h = load_history(conn, until=now, production=_production(config))
    result = evaluate_history(h, config, now, declared=declared_units(conn, now))
    if candidates is None:
        return result
    return {key: result.get(key, ["not alive at this time"]) for key in candidates}


def _production(config: Config) -> tuple[str, ...]:
    return tuple(config["model.production_environments"])


def evaluate_history(h: History, config: Config, now: datetime | float, *,
                     declared: dict[Key, list[str]] | None = None,
                     denied: dict[Key, list[str]] | None = None) -> dict[Key, list[str]]:
    """The guardrails on an already-loaded history (training replays many instants).

    ``denied`` (:func:`denied_units`) is passed by the suggestions only: training learns from
    denials as labels, it must not also hide them as guardrails."""
    n = now if isinstance(now, float) else days(now)
    units = alive_units(h, n)
    unit_of = _unit_map(h)
    tags = current_tags(h, n)
    m = h.manifests
    alive = ((m["first_seen"] <= n) & (m["deleted_at"].isna() | (m["deleted_at"] > n))
             ).to_numpy(dtype=bool)
    members: dict[Key, list[Key]] = {}
    for row, key, top in _followers(h):
        if alive[row]:
            members.setdefault(top, []).append(key)

    blocked: dict[Key, list[str]] = {}
    keys = list(rows(units, "repository", "digest"))
    first_seen = dict(zip(keys, units["first_seen"].to_numpy(dtype=float), strict=True))
    rules: dict[str, PolicyRule] = {}
    # Per repository: its rule's minimum age and deploy window in days, and which tags its
    # globs protect (each tag's answer kept, per set of globs: the same tags come back at
    # every unit of a repository).
    limits: dict[str, tuple[float, float, dict[str, bool]]] = {}
    answers_by_globs: dict[tuple[str, ...], dict[str, bool]] = {}

    def rule(repo: str) -> PolicyRule:
        if repo not in rules:
            rules[repo] = config.policy_for(repo)
        return rules[repo]

    def rule_limits(repo: str, p: PolicyRule) -> tuple[float, float, dict[str, bool]]:
        if repo not in limits:
            limits[repo] = (p.min_age.total_seconds() / 86400,
                            p.keep_deployed_within.total_seconds() / 86400,
                            answers_by_globs.setdefault(tuple(p.protected_tags), {}))
        return limits[repo]

    def is_protected(p: PolicyRule, answers: dict[str, bool], tag: str) -> bool:
        answer = answers.get(tag)
        if answer is None:
            answer = answers[tag] = any(fnmatch.fnmatchcase(tag, g) for g in p.protected_tags)
        return answer

    def unit_tags(key: Key) -> list[str]:
        own = list(tags.get(key, []))
        for member in members.get(key, []):
            own.extend(tags.get(member, []))
        return own

    running = running_at(h, n)
    dep = h.deploys[(h.deploys["time"] <= n) & h.deploys["digest"].notna()
                    & h.deploys["production"]]
    last_prod: dict[Key, float] = {}
    for repo, digest, when in rows(dep, "repository", "digest", "time"):
        key = unit_of.get((repo, digest), (repo, digest))
        last_prod[key] = max(last_prod.get(key, -np.inf), float(when))

    _, newest_tagging = tag_spans(h, n)

    for key in keys:
        repo, digest = key
        p = rule(repo)
        min_age, window, answers = rule_limits(repo, p)
        reasons: list[str] = []
        # Most units have no members: their own tags and times, without building lists.
        group = members.get(key)
        all_tags = unit_tags(key) if group else tags.get(key, ())
        protected = sorted({t for t in all_tags if is_protected(p, answers, t)})
        if protected:
            reasons.append(f"protected tag: {', '.join(protected)}")
        involved = [key, *group] if group else [key]
        if group:
            runs = any(k in running for k in involved) or key in running
            newest = max((newest_tagging.get(k, -np.inf) for k in involved), default=-np.inf)
        else:
            runs = key in running
            newest = newest_tagging.get(key, -np.inf)
        if runs:
            reasons.append("running in a cluster now")
        born = max(first_seen[key], newest)
        if n - born < min_age:
            reasons.append(f"min age: {_fmt_days(n - born)} since pushed or re-tagged "
                           f"(< {_fmt_days(min_age)})")
        if key in last_prod and n - last_prod[key] <= window:
            reasons.append(f"deployed to production {_fmt_days(n - last_prod[key])} ago "
                           f"(within {_fmt_days(window)})")
        if declared:
            for k in involved:
                for where in declared.get(k, []):
                    reasons.append(f"referenced: {where}")
        # A denied batch holds the unit and its members: one reason, not one per item.
        if denied:
            for k in involved:
                reasons.extend(r for r in denied.get(k, []) if r not in reasons)
        if reasons:
            blocked[key] = reasons

    _keep_last_n(keys, tags, last_prod, first_seen, rule, blocked)

    out: dict[Key, list[str]] = {key: blocked.get(key, []) for key in keys}
    # Members are decided with their unit: kept whole or proposed whole.
    for top, group in members.items():
        prefix = f"decided with {_short(top[1])}: "
        for member in group:
            if top in out:
                out[member] = [prefix + r for r in out[top]]
            else:
                out[member] = ["its index or subject is not alive"]
    return out


def _followers(h: History) -> list[tuple[int, Key, Key]]:
    """The manifests that follow another (children, referrers), found once per history."""
    if h.followers is None:
        unit_of = _unit_map(h)
        h.followers = [(row, key, top) for row, key in enumerate(
            rows(h.manifests, "repository", "digest"))
            if (top := unit_of.get(key, key)) != key]
    return h.followers


def _short(digest: str) -> str:
    return digest.split(":")[-1][:12]


def _keep_last_n(keys: list[Key], tags: dict[Key, list[str]], last_prod: dict[Key, float],
                 first_seen: dict[Key, float], rule: Callable[[str], PolicyRule],
                 blocked: dict[Key, list[str]]) -> None:
    """Keep-last-N per repository: production releases, other versions, unversioned builds."""
    families: dict[tuple[str, str], list[tuple[Any, Key, str]]] = {}
    for key in keys:
        repo = key[0]
        named = [t for t in tags.get(key, []) if classify(t) not in ("signature", "floating")]
        if not named and key not in last_prod:
            continue  # untagged manifests are not versions (a floating tag moved on)
        versions = [(v.key(), t) for t in named if (v := parse_semver(t)) is not None]
        if key in last_prod:
            best = max(versions) if versions else None
            # Production releases in version order; unversioned ones by their last deploy.
            order: Any = (1, best[0], 0.0) if best else (0, (), last_prod[key])
            label = best[1] if best else _short(key[1])
            families.setdefault((repo, "production"), []).append((order, key, label))
        elif versions:
            best = max(versions)
            families.setdefault((repo, "version"), []).append((best[0], key, best[1]))
        else:
            families.setdefault((repo, "build"), []).append((first_seen[key], key, named[0]))
    for (repo, family), members in families.items():
        p = rule(repo)
        keep = p.keep_production if family == "production" else p.keep_other
        members.sort(key=lambda item: item[0], reverse=True)
        for rank, (_, key, label) in enumerate(members[:keep], start=1):
            what = {"production": "production release", "version": "version",
                    "build": "build (by push time)"}[family]
            blocked.setdefault(key, []).append(
                f"keep-last-{keep}: {label} is the #{rank} newest {what}")

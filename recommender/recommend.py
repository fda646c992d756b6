"""Suggestions: score every alive unit, apply the guardrails, rank by expected bytes, batch.

The order of the steps is the safety argument: the model only ranks; a unit any guardrail keeps
is never ``suggested`` whatever its score (docs/design.md, invariant 6). The expected
reclaimable bytes of an item are its score times its layer-deduplicated bytes when the
inventory knows them (blobs shared with surviving manifests free nothing). Items are grouped
into batches per repository and tag kind, the unit a team approves in Slack.

Without a promoted model (less history than the horizon, or a model refused on load) the
recommender runs in a conservative rules-only mode and says so in every item's reasons.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import Connection, select

from .config import Config
from .errors import ModelError
from .features import NEVER, days, features_at, load_history
from .inventory import reclaimable_bytes
from .inventory.lastpull import COARSE_NOTE, coarse_only_repositories
from .model import LoadedModel, current_model, rules_only_message
from .policy import declared_units, denied_units, evaluate_history
from .store import Store
from .store import tables as t

__all__ = ["Suggestion", "explain", "mode_note", "reasons_for", "suggest"]

_KIND_WORDS = {
    "semver": "a release", "prerelease": "a pre-release", "commit": "a commit build",
    "build": "a numbered build", "date": "a dated build", "branch": "a branch build",
    "pr": "a pull-request image", "floating": "behind a floating tag", "test": "a test image",
    "signature": "a signature", "other": "an image", "untagged": "untagged",
}


@dataclass
class Suggestion:
    repository: str
    digest: str
    tags: list[str]
    score: float  # P(no use within the horizon); 1/0 in rules-only mode
    suggested: bool
    reclaimable_bytes: int | None  # layer-deduplicated; None when the inventory does not know
    reasons: list[str]
    blocked_by: list[str]
    batch: str  # "repository::kind"
    kind: str
    members: list[str] = field(default_factory=list)  # platform manifests, signatures
    bytes: int | None = 0  # manifest + layers as pushed (not deduplicated); None: unknown
    mode: str = "model"  # model | rules-only
    model_id: str | None = None

    @property
    def size(self) -> int | None:
        """What deleting it frees as far as known: deduplicated when the inventory knows
        the layers, else as pushed; None when the store knows no size at all."""
        return self.reclaimable_bytes if self.reclaimable_bytes is not None else self.bytes

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _plural(n: float, word: str) -> str:
    n = int(n)
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def reasons_for(row: pd.Series) -> list[str]:
    """Plain words with figures: why this unit looks dead (or alive)."""
    out: list[str] = []
    if row["days_since_use"] >= NEVER:
        out.append(f"never used since pushed {_plural(row['age_days'], 'day')} ago")
    else:
        out.append(f"no use for {_plural(row['days_since_use'], 'day')}")
    if row["uses_90"] > 0:
        out.append(f"{_plural(row['uses_90'], 'use')} in the last 90 days")
    if row["scanner_only"]:
        out.append("only scanners pulled it lately")
    if row["newer_versions"] > 0:
        out.append(f"{_plural(row['newer_versions'], 'newer version')}")
    if row["newer_pushes"] > 0:
        pushes = int(row["newer_pushes"])
        out.append(f"{pushes} newer push{'' if pushes == 1 else 'es'} in the repository")
    out.append(_KIND_WORDS.get(str(row["kind"]), "an image"))
    if row["days_since_untagged"] < NEVER:
        out.append(f"untagged for {_plural(row['days_since_untagged'], 'day')}")
    if row["days_since_deploy"] < NEVER:
        out.append(f"last deployed {_plural(row['days_since_deploy'], 'day')} ago")
    if row["gap_max_days"] > 0:
        out.append(f"longest gap between uses {_plural(row['gap_max_days'], 'day')}")
    return out


def _reclaimable(conn: Connection) -> Callable[[str, str], int | None]:
    """Layer-deduplicated bytes from the inventory."""
    # Only manifests whose layers the inventory has seen have a meaningful figure; for the
    # others it would count the manifest's own bytes alone.
    mb = t.manifest_blobs
    known = {(r, d) for r, d in conn.execute(select(mb.c.repository, mb.c.digest).distinct())}

    def one(repo: str, digest: str) -> int | None:
        if (repo, digest) not in known:
            return None
        return int(reclaimable_bytes(conn, [(repo, digest)]))

    return one


def _load(store: Store) -> tuple[LoadedModel | None, str | None]:
    try:
        return current_model(store), None
    except ModelError as exc:
        return None, exc.message


def _rules_note(start: float | None, now: datetime, horizon: float, refused: str | None) -> str:
    history = days(now) - start if start is not None else 0.0
    if refused:
        return f"rules-only mode: model refused ({refused})"
    if history < horizon + 35:  # 14 days of features + three weekly cut-offs
        return rules_only_message(history, horizon)
    return "rules-only mode: no trained model yet (run `tagwarden train`)"


def mode_note(store: Store, config: Config, *, now: datetime) -> str | None:
    """Why suggestions as of ``now`` come from the rules alone, or None when a model scores
    them: what to tell a user even when there is nothing to suggest."""
    model, refused = _load(store)
    if model is not None:
        return None
    horizon = config["model.horizon"].total_seconds() / 86400
    with store.connect() as conn:
        h = load_history(conn, until=now, production=config["model.production_environments"])
    return _rules_note(h.start, now, horizon, refused)


def suggest(store: Store, config: Config, *, now: datetime, repository_glob: str | None = None,
            include_all: bool = False) -> list[Suggestion]:
    """Scored, guardrailed, ranked suggestions as of ``now`` (``include_all``: every unit)."""
    horizon = config["model.horizon"].total_seconds() / 86400
    model, refused = _load(store)
    with store.connect() as conn:
        h = load_history(conn, until=now, production=config["model.production_environments"])
        frame = features_at(h, now)
        blocked = evaluate_history(h, config, now, declared=declared_units(conn, now),
                                   denied=denied_units(conn, config, now))
        if repository_glob:
            frame = frame[[fnmatch.fnmatchcase(r, repository_glob)
                           for r in frame["repository"]]].reset_index(drop=True)
        keys = list(zip(frame["repository"], frame["digest"], strict=True))
        frame["eligible"] = [not blocked.get(k) for k in keys]
        if model is not None:
            mode, note = "model", None
            scores = model.fitted.score(frame)
            picked = (scores >= model.fitted.threshold) & frame["eligible"].to_numpy(dtype=bool)
        else:
            # Conservative rules: idle for twice the horizon, never deployed lately, not
            # running, and no guardrail -- far stricter than a tuned rule would be.
            mode = "rules-only"
            note = _rules_note(h.start, now, horizon, refused)
            picked = (frame["eligible"].to_numpy(dtype=bool)
                      & (frame["idle_days"].to_numpy(dtype=float) > 2 * horizon)
                      & (frame["running"].to_numpy(dtype=float) == 0))
            scores = picked.astype(float)
        reclaim = _reclaimable(conn)
        members = _members(h, keys)
        coarse = coarse_only_repositories(conn)
        out: list[Suggestion] = []
        for i, row in frame.iterrows():
            if not (include_all or picked[i]):
                continue
            key = keys[int(i)]  # type: ignore[call-overload]
            reasons = reasons_for(row)
            if key[0] in coarse:
                reasons.append(COARSE_NOTE)
            if mode == "model":
                reasons.insert(0, f"P(no use in {horizon:.0f} days) = {scores[i]:.4f}")
            else:
                reasons.insert(0, str(note))
            out.append(Suggestion(
                repository=key[0], digest=key[1], tags=list(row["tags"]),
                score=float(scores[i]), suggested=bool(picked[i]),
                reclaimable_bytes=reclaim(*key) if picked[i] or include_all else None,
                reasons=reasons, blocked_by=list(blocked.get(key, [])),
                batch=f"{key[0]}::{row['kind']}", kind=str(row["kind"]),
                members=members.get(key, []),
                bytes=int(row["bytes"]) if row["size_known"] else None, mode=mode,
                model_id=model.id if model else None))
    out.sort(key=lambda s: (-s.score * (s.size or 0), s.repository, s.digest))
    return out


def _members(h: Any, keys: list[tuple[str, str]]) -> dict[tuple[str, str], list[str]]:
    from .units import _unit_map

    wanted = set(keys)
    out: dict[tuple[str, str], list[str]] = {}
    m = h.manifests
    alive = m[m["deleted_at"].isna()]
    units = _unit_map(h)
    for key in zip(alive["repository"], alive["digest"], strict=True):
        top = units.get(key, key)
        if top != key and top in wanted:
            out.setdefault(top, []).append(key[1])
    return out


def explain(store: Store, config: Config, *, repository: str, digest: str,
            now: datetime) -> dict[str, Any]:
    """Everything about one manifest: its features, score, every guardrail, every reason."""
    with store.connect() as conn:
        h = load_history(conn, until=now, production=config["model.production_environments"])
        blocked = evaluate_history(h, config, now, declared=declared_units(conn, now),
                                   denied=denied_units(conn, config, now))
    key = (repository, digest)
    if key not in blocked:
        raise ModelError(f"{repository}@{digest} is not an alive manifest at {now:%Y-%m-%d}",
                         repository=repository, digest=digest)
    frame = features_at(h, now)
    unit_rows = frame[(frame["repository"] == repository) & (frame["digest"] == digest)]
    items = suggest(store, config, now=now, repository_glob=repository, include_all=True)
    item = next((s for s in items if s.digest == digest), None)
    out: dict[str, Any] = {"repository": repository, "digest": digest,
                           "blocked_by": blocked[key]}
    if item is None:  # a platform manifest or signature: decided with its unit
        out["decided_with_unit"] = True
        out["suggested"] = False
        return out
    out.update(item.as_dict())
    if not unit_rows.empty:
        row = unit_rows.iloc[0]
        out["features"] = {k: (v.item() if isinstance(v, np.generic) else v)
                           for k, v in row.items() if k not in ("tags",)}
    return out

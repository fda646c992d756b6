"""Properties of load_history -> features_at -> policy -> suggest on small generated histories.

Hypothesis draws histories of pushes (plain images, indexes with platform manifests, signed
images), tag moves, pulls, deploys, pod lists, declared references and deletions, and an
instant to ask at (before, between, exactly at and long after the events). The invariants:

- features at ``now`` are the same whether or not events after ``now`` are in the store
  (the ``tags`` column included);
- every alive manifest appears exactly once: as a unit, or as a member of one;
- a unit that runs, carries a protected tag or is declared in a deployment file (itself or one
  of its members) is never suggested;
- a suggested unit's alive platform manifests and signatures are exactly its ``members``.

A pull counts in the rollup of its UTC day; a day still in progress at ``now`` is seen as its
first pull only, so the future pulls drawn here fall on later days than ``now`` (every other
kind of event may fall anywhere after ``now``).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from recommender.config import Config
from recommender.config import load as load_config
from recommender.features import features_at, load_history
from recommender.policy import declared_units, evaluate_history
from recommender.recommend import suggest
from recommender.reference import parse_reference
from recommender.refs.found import DeclaredRef
from recommender.refs.store import record
from recommender.store import Store, open_store

from .builders import History, at, digest

REPOS = ("a/app", "b/svc")
TAGS = ("latest", "v1.0.0", "v1.1.0", "build-1", "build-2", "prod-eu")
PROTECTED = ("latest", "prod-*")
SETTINGS = settings(max_examples=25, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
_SEEN: set[str] = set()  # distinct histories run, for the closing count

Key = tuple[str, str]


@dataclass
class Image:
    repo: str
    name: str
    day: float
    tags: tuple[str, ...]
    shape: str  # plain | index | signed

    @property
    def digest(self) -> str:
        return digest(f"{self.repo}/{self.name}")

    def members(self) -> list[tuple[str, str]]:
        """(name, role) of the manifests pushed with it."""
        if self.shape == "index":
            return [(f"{self.name}-amd64", "child"), (f"{self.name}-arm64", "child")]
        if self.shape == "signed":
            return [(f"{self.name}-sig", "signature")]
        return []


@dataclass
class Story:
    images: list[Image]
    events: list[tuple]  # (day, kind, ...) sorted by day
    now: float

    def key(self) -> str:
        return repr((self.images, self.events))


_day = st.integers(0, 240).map(lambda q: q / 4)  # quarter days over two months


@st.composite
def stories(draw: st.DrawFn) -> Story:
    images: list[Image] = []
    for i in range(draw(st.integers(1, 5))):
        images.append(Image(draw(st.sampled_from(REPOS)), f"img{i}", draw(_day),
                            tuple(draw(st.lists(st.sampled_from(TAGS), max_size=2, unique=True))),
                            draw(st.sampled_from(("plain", "plain", "index", "signed")))))
    events: list[tuple] = []
    if images:
        pick = st.integers(0, len(images) - 1)
        for _ in range(draw(st.integers(0, 10))):
            i = draw(pick)
            day = max(draw(_day), images[i].day)
            kind = draw(st.sampled_from(("tag", "tag", "pull", "pull", "scan", "deploy", "pods",
                                         "delete", "declare", "child-pull")))
            if kind == "tag":
                events.append((day, "tag", i, draw(st.sampled_from(TAGS))))
            elif kind == "deploy":
                events.append((day, "deploy", i, draw(st.sampled_from(("production", "staging")))))
            elif kind == "pods":
                events.append((day, "pods", i, draw(st.sampled_from(("prod-eu", "dev")))))
            else:
                events.append((day, kind, i))
    times = [0.0, *[im.day for im in images], *[e[0] for e in events]]
    now = draw(st.one_of(
        st.sampled_from(times),  # exactly at an event
        st.sampled_from(times).map(lambda x: x + 0.3),  # between events
        st.floats(-2, 62, allow_nan=False).map(lambda x: round(x, 3)),
        st.floats(62, 3000, allow_nan=False).map(lambda x: round(x, 1)),  # long after
    ))
    return Story(images, sorted(events, key=lambda e: (e[0], e[1])), float(now))


def _config(tmp: Path) -> Config:
    path = tmp / "tagwarden.toml"
    path.write_text(f"""
[model]
dir = "{tmp / 'models'}"
horizon = "7d"

[[policy]]
repositories = ["*"]
protected_tags = {list(PROTECTED)!r}
keep_production = 0
keep_other = 0
min_age = "0s"
keep_deployed_within = "0s"
""".replace("'", '"'), encoding="utf-8")
    return load_config(path, env={})


@dataclass
class Built:
    store: Store
    alive: set[Key] = field(default_factory=set)
    running: set[Key] = field(default_factory=set)
    protected: set[Key] = field(default_factory=set)
    declared: set[Key] = field(default_factory=set)
    members: dict[Key, set[Key]] = field(default_factory=dict)  # unit -> alive members


def _write(store: Store, story: Story, *, until: float | None) -> Built:
    """Write the story into ``store`` (only what happened by ``until`` when given, pulls on
    ``until``'s UTC day included) and work out, independently of the code under test, what
    is alive, running, protected and declared at ``story.now``."""
    h = History(store)
    now = story.now
    built = Built(store)

    def keep(day: float, kind: str = "") -> bool:
        if until is None:
            return True
        if kind in ("pull", "scan", "child-pull"):
            return math.floor(day) <= math.floor(until)
        return day <= until

    tags_now: dict[Key, set[str]] = {}
    tag_owner: dict[tuple[str, str], str] = {}
    deleted: dict[Key, float] = {}
    actions: list[tuple] = []
    for im in story.images:
        actions.append((im.day, "push", im))
    actions.extend(story.events)
    actions.sort(key=lambda a: (a[0], a[1] != "push"))
    pods: dict[str, tuple[float, Key]] = {}
    declared_at: list[tuple[float, Key]] = []
    for action in actions:
        day, kind = action[0], action[1]
        if not keep(day, kind):
            continue
        if kind == "push":
            im = action[2]
            d = h.push(im.repo, im.name, im.day, *im.tags, is_index=im.shape == "index")
            for tag in im.tags:
                if day <= now:
                    tags_now.get((im.repo, tag_owner.get((im.repo, tag), "")), set()).discard(tag)
                    tag_owner[(im.repo, tag)] = d
                    tags_now.setdefault((im.repo, d), set()).add(tag)
            for name, role in im.members():
                if role == "child":
                    c = h.push(im.repo, name, im.day)
                    h.child(im.repo, d, c)
                else:
                    h.push(im.repo, name, im.day, f"sha256-{d.split(':')[1]}.sig",
                           subject=d, referrer_kind="signature")
            continue
        im = story.images[action[2]]
        d = im.digest
        if kind == "tag":
            h.tag(im.repo, action[3], d, day)
            if day <= now:
                owner = tag_owner.get((im.repo, action[3]))
                if owner:
                    tags_now.get((im.repo, owner), set()).discard(action[3])
                tag_owner[(im.repo, action[3])] = d
                tags_now.setdefault((im.repo, d), set()).add(action[3])
        elif kind in ("pull", "scan"):
            h.pull(im.repo, d, day, usage="use" if kind == "pull" else "scanner")
        elif kind == "child-pull":
            target = digest(f"{im.repo}/{im.members()[0][0]}") if im.members() else d
            h.pull(im.repo, target, day)
        elif kind == "deploy":
            h.deploy(im.repo, d, day, environment=action[3])
        elif kind == "pods":
            h.pods(day, [(im.repo, d)], source=action[3])
            if day <= now:
                pods[action[3]] = (day, (im.repo, d))
        elif kind == "delete":
            if (im.repo, d) not in deleted:
                h.delete(im.repo, d, day)
                deleted[(im.repo, d)] = day
        elif kind == "declare":
            declared_at.append((day, (im.repo, d)))
    if declared_at:
        # One source, its set growing at each declaration (a source's history only moves on).
        so_far: list[DeclaredRef] = []
        for day, (repo, d) in declared_at:
            image = f"reg.example.com/{repo}@{d}"
            so_far.append(DeclaredRef(image, parse_reference(image), f"deploy/{d[7:15]}.yaml:1",
                                      "kubernetes"))
            record(store, {"gitops": list(so_far)}, at=at(day))
            if day <= now:
                built.declared.add((repo, d))

    for im in story.images:
        if until is not None and im.day > until:
            continue
        key = (im.repo, im.digest)
        unit_alive = im.day <= now and not (key in deleted and deleted[key] <= now)
        if unit_alive:
            built.alive.add(key)
        member_keys = {(im.repo, digest(f"{im.repo}/{name}")) for name, _ in im.members()}
        if im.day <= now:
            built.alive |= member_keys  # members are never deleted on their own here
        if unit_alive:
            built.members[key] = member_keys if im.day <= now else set()
        if tags_now.get(key, set()) & {t for t in TAGS if t in ("latest", "prod-eu")}:
            built.protected.add(key)
    built.running = {ref for _, ref in pods.values()}
    return built


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated empty store, copied for every example (migrating each time costs seconds)."""
    root = tmp_path_factory.mktemp("props")
    open_store(f"sqlite:///{root / 'empty.db'}").dispose()
    return root / "empty.db"


@pytest.fixture(scope="module", autouse=True)
def _count(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"test_properties: {len(_SEEN)} distinct histories run")


class Stores:
    def __init__(self, template: Path, root: Path) -> None:
        self.template, self.root, self.n = template, root, 0
        self.open: list[Store] = []

    def fresh(self) -> Store:
        self.n += 1
        path = self.root / f"s{self.n}.db"
        shutil.copy(self.template, path)
        store = open_store(f"sqlite:///{path}", migrate_schema=False)
        self.open.append(store)
        return store

    def close(self) -> None:
        for store in self.open:
            store.dispose()
        self.open.clear()


@pytest.fixture
def stores(template: Path, tmp_path: Path) -> Iterator[Stores]:
    s = Stores(template, tmp_path)
    yield s
    s.close()


def _features(store: Store, now: float, until: float | None = None) -> pd.DataFrame:
    """Features at ``now`` from a history loaded up to ``until`` (default ``now``), as
    training loads once and replays earlier instants."""
    with store.connect() as conn:
        h = load_history(conn, until=at(now if until is None else until))
        frame = features_at(h, at(now))
    return frame.sort_values(["repository", "digest"]).reset_index(drop=True)


@SETTINGS
@given(story=stories())
def test_features_ignore_what_happened_after_now(story: Story, stores: Stores) -> None:
    _SEEN.add(story.key())
    event(f"{sum(e[0] > story.now for e in story.events)} events after now")
    try:
        everything = _write(stores.fresh(), story, until=None)
        so_far = _write(stores.fresh(), story, until=story.now)
        cut = _features(so_far.store, story.now)
        # The whole store read up to now, and read up to years later (training's replay).
        for full in (_features(everything.store, story.now),
                     _features(everything.store, story.now, until=story.now + 4000)):
            # Dtypes of an empty frame depend on what the store held, not on the features.
            pd.testing.assert_frame_equal(full, cut, check_exact=False, rtol=1e-9, atol=1e-6,
                                          check_dtype=not cut.empty)
            assert full["tags"].tolist() == cut["tags"].tolist()
    finally:
        stores.close()


@SETTINGS
@given(story=stories())
def test_suggestions_keep_every_guarded_unit_whole(story: Story, stores: Stores,
                                                   tmp_path: Path) -> None:
    _SEEN.add(story.key())
    try:
        b = _write(stores.fresh(), story, until=None)
        config = _config(tmp_path)
        items = suggest(b.store, config, now=at(story.now), include_all=True)
        event(f"{sum(s.suggested for s in items)} suggested of {len(items)} units")
        listed = [(s.repository, s.digest) for s in items]
        listed += [(s.repository, m) for s in items for m in s.members]
        # Every alive manifest once: as a unit or as a member of exactly one unit.
        assert sorted(listed) == sorted(b.alive)
        with b.store.connect() as conn:
            h = load_history(conn, until=at(story.now))
            verdicts = evaluate_history(h, config, at(story.now),
                                        declared=declared_units(conn, at(story.now)))
        for s in items:
            key = (s.repository, s.digest)
            involved = {key} | {(s.repository, m) for m in s.members}
            guarded = involved & (b.running | b.protected | b.declared)
            if guarded:  # the guardrails keep it, whatever scores it (rules or a model)
                assert verdicts[key] and s.blocked_by and not s.suggested, (key, guarded)
            if s.suggested:
                assert not verdicts[key]
                assert set(s.members) == {m for _, m in b.members.get(key, set())}
    finally:
        stores.close()

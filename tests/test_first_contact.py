"""First contact: every command that reads the store works on the small, empty and odd
histories a new user starts with (no traceback, and rules-only mode says why).

Each situation builds a store with the model tests' builders (real rows in the real tables)
and names the instant to ask at; every command runs through ``recommender.cli.main`` as a user
types it, and the scheduler's jobs run as the scheduler calls them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from bot.fakeslack import FakeSlack
from recommender.cli import main
from recommender.config import load as load_config
from recommender.reference import parse_reference
from recommender.refs.found import DeclaredRef
from recommender.refs.store import record
from recommender.scheduler import default_jobs
from recommender.store import Store, open_store
from recommender.store import tables as t
from tests.model.builders import History, at, digest


@dataclass(frozen=True)
class Case:
    """A store's history, the instant to ask at, and a manifest ``why`` can explain."""

    now: datetime
    why: tuple[str, str] | None = None
    thin: bool = True  # too little history for a model: rules-only mode must say so


def _empty(store: Store) -> Case:
    return Case(at(0))


def _one_manifest(store: Store) -> Case:
    d = History(store).push("app", "a", 0, "v1.0.0")
    return Case(at(30), ("app", d))


def _one_repository(store: Store) -> Case:
    h = History(store)
    builds = [h.push("team/app", f"b{i}", i, f"build-{i}") for i in range(6)]
    for i, d in enumerate(builds[3:]):
        h.pull("team/app", d, 10 + i, n=3)
    return Case(at(200), ("team/app", builds[0]))


def _scan_only(store: Store) -> Case:
    """What a first ``scan`` leaves: manifests and tags, no pull, push or deploy at all."""
    d = digest("scan/a")
    with store.begin() as conn:
        conn.execute(insert(t.manifests).values(
            repository="scan/a", digest=d, first_seen=at(0), last_scanned=at(0),
            total_bytes=5_000_000, size=900, is_index=False))
        conn.execute(insert(t.tag_history).values(repository="scan/a", tag="1.0", digest=d,
                                                  valid_from=at(0), source="scan"))
    return Case(at(1), ("scan/a", d))


def _uses_over_a_year_ago(store: Store) -> Case:
    h = History(store)
    ds = [h.push("quiet/app", f"q{i}", i, f"build-{i}") for i in range(4)]
    for i, d in enumerate(ds):
        h.pull("quiet/app", d, 5 + i, n=2)
        h.pull("quiet/app", d, 9 + i)
    return Case(at(420), ("quiet/app", ds[0]), thin=False)


def _deploys_only(store: Store) -> Case:
    h = History(store)
    h.deploy("svc", digest("svc/unknown"), 3)
    h.deploy("svc", digest("svc/unknown2"), 4, environment="staging")
    return Case(at(10))


def _pods_only(store: Store) -> Case:
    History(store).pods(2, [("svc", digest("svc/running")), ("other", digest("x"))])
    return Case(at(5))


def _declared_only(store: Store) -> Case:
    image = f"reg.example.com/team/app@{digest('team/app/declared')}"
    record(store, {"gitops": [DeclaredRef(image, parse_reference(image), "deploy/a.yaml:3",
                                          "kubernetes")]}, at=at(1))
    return Case(at(3))


def _index_with_unknown_children(store: Store) -> Case:
    h = History(store)
    index = h.push("multi/app", "idx", 0, "v2", is_index=True)
    h.child("multi/app", index, digest("multi/app/amd64-never-seen"))
    h.child("multi/app", index, digest("multi/app/arm64-never-seen"))
    h.push("multi/app", "old", 0, "build-1")
    return Case(at(120), ("multi/app", index))


def _signature_of_deleted_subject(store: Store) -> Case:
    h = History(store)
    subject = h.push("signed/app", "s", 0, "build-1")
    sig = h.push("signed/app", "sig", 1, f"sha256-{subject.split(':')[1]}.sig",
                 subject=subject, referrer_kind="signature")
    h.delete("signed/app", subject, 5)
    return Case(at(120), ("signed/app", sig))


def _mixed(store: Store) -> tuple[History, list[str]]:
    h = History(store)
    ds = [h.push("mix/app", f"m{i}", i * 3, f"build-{i}") for i in range(5)]
    h.pull("mix/app", ds[1], 10)
    h.deploy("mix/app", ds[2], 12)
    h.pods(14, [("mix/app", ds[2])])
    return h, ds


def _now_before_first_event(store: Store) -> Case:
    _mixed(store)
    return Case(at(-30), None)


def _now_exactly_at_an_event(store: Store) -> Case:
    _, ds = _mixed(store)
    return Case(at(12), ("mix/app", ds[2]))


def _now_years_after(store: Store) -> Case:
    _, ds = _mixed(store)
    return Case(at(365 * 6), ("mix/app", ds[0]), thin=False)


def _unknown_sizes(store: Store) -> Case:
    """Manifests known from registry events only: no scan has read their sizes."""
    d = digest("events/a")
    with store.begin() as conn:
        for i, name in enumerate(("events/a", "events/b")):
            conn.execute(insert(t.manifests).values(
                repository="events/app", digest=digest(name), first_seen=at(i),
                is_index=False))
    History(store).pull("events/app", d, 3)
    return Case(at(200), ("events/app", d))


SITUATIONS: dict[str, Callable[[Store], Case]] = {
    "empty store": _empty,
    "one manifest": _one_manifest,
    "one repository": _one_repository,
    "scan only, no events": _scan_only,
    "uses only older than 365 days": _uses_over_a_year_ago,
    "only deploy events": _deploys_only,
    "only pod lists": _pods_only,
    "only declared references": _declared_only,
    "index with unknown children": _index_with_unknown_children,
    "signature of a deleted subject": _signature_of_deleted_subject,
    "--now before the first event": _now_before_first_event,
    "--now exactly at an event": _now_exactly_at_an_event,
    "--now years after the last event": _now_years_after,
    "unknown sizes": _unknown_sizes,
}

COMMANDS = ["suggest", "suggest --all --format json", "why", "train", "backtest", "digest",
            "execute --dry-run", "inventory", "scheduler jobs"]


@dataclass
class World:
    url: str
    config: Path
    store: Store
    case: Case


@pytest.fixture
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    store = open_store(url)
    case = SITUATIONS[request.param](store)
    config = tmp_path / "tagwarden.toml"
    config.write_text(f"""
[model]
dir = "{tmp_path / 'models'}"

[registry]
url = "http://127.0.0.1:9"

[[team]]
name = "everyone"
repositories = ["*"]
channel = "C0ALL"
approvers = ["U0ALICE"]
""", encoding="utf-8")
    try:
        yield World(url, config, store, case)
    finally:
        store.dispose()


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def _cli(w: World, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["--db", w.url, "--config", str(w.config), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _jobs(w: World, tmp_path: Path) -> None:
    """The scheduler's jobs on this store, Slack being the fake Web API."""
    with FakeSlack() as fake:
        text = w.config.read_text(encoding="utf-8") + f"""
[slack]
api_url = "{fake.api_url}"
bot_token = "xoxb-first-contact"
signing_secret = "first-contact-secret"
"""
        path = tmp_path / "jobs.toml"
        path.write_text(text, encoding="utf-8")
        config = load_config(path, env={}, overrides={"store.url": w.url})
        jobs = {j.name: j.func for j in default_jobs(config, w.store)}
        assert {"retrain", "prune", "execute", "scan", "suggest", "digest:everyone"} <= set(jobs)
        for name in ("retrain", "suggest", "digest:everyone", "execute", "prune"):
            jobs[name](w.case.now)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("world", list(SITUATIONS), indirect=True)
def test_every_command_works_on_every_first_history(
        world: World, command: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    now = _iso(world.case.now)
    if command == "scheduler jobs":
        _jobs(world, tmp_path)
        return
    if command == "why":
        repo, d = world.case.why or ("nobody/here", digest("nobody/here"))
        code, out, err = _cli(world, capsys, "why", f"{repo}@{d}", "--now", now)
        if world.case.why is None:  # nothing alive to explain: one line, not a traceback
            assert code == 1 and err.startswith("error: ") and err.count("\n") == 1, err
        else:
            assert code == 0 and "verdict: " in out, err
        return
    if command == "backtest":
        # The horizon after --at must have elapsed by the real clock: ask a year back.
        at_ = _iso(min(world.case.now, datetime.now(world.case.now.tzinfo)
                       - timedelta(days=100)))
        code, out, err = _cli(world, capsys, "backtest", "--at", at_)
    elif command in ("digest", "execute --dry-run", "train"):
        code, out, err = _cli(world, capsys, *command.split(), "--now", now)
    elif command == "inventory":
        code, out, err = _cli(world, capsys, "inventory")
    else:
        code, out, err = _cli(world, capsys, *command.split(), "--now", now)
    assert code == 0, err
    assert "Traceback" not in out + err
    if command == "train" and world.case.thin:
        assert "rules-only mode" in out
    if command == "suggest" and world.case.thin:
        assert "rules-only mode" in out, out


# --- the two reproductions of issue 13 ---------------------------------------------------------


def test_suggest_on_a_new_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The first command a newcomer types (was a TypeError in features._tag_features)."""
    code = main(["--db", f"sqlite:///{tmp_path / 'new.db'}", "suggest"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "rules-only mode" in out.out and "nothing to suggest" in out.out


def test_suggest_after_a_year_without_use(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Manifests with uses, none in the last 365 days (was an IndexError in _group_stats)."""
    url = f"sqlite:///{tmp_path / 'quiet.db'}"
    store = open_store(url)
    h = History(store)
    for i in range(3):
        d = h.push("paused/app", f"p{i}", i, f"build-{i}")
        h.pull("paused/app", d, 10 + i)
        h.pull("paused/app", d, 20 + i)
    store.dispose()
    code = main(["--db", url, "suggest", "--now", _iso(at(22 + 400)), "--all",
                 "--format", "json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert '"repository": "paused/app"' in out.out


# --- sizes: unknown is not zero, and small is not 0.00 GB --------------------------------------


def _events_only_store(url: str, *, sized: bool) -> None:
    """Builds known from registry events (no scan: no sizes) unless ``sized``; one is used
    every week for five months, the others never after their push."""
    store = open_store(url)
    h = History(store)
    with store.begin() as conn:
        for i in range(6):
            conn.execute(insert(t.manifests).values(
                repository="events/app", digest=digest(f"events/{i}"), first_seen=at(i),
                is_index=False, total_bytes=850_000 if sized else None))
    for week in range(22):
        h.pull("events/app", digest("events/0"), 7 * week + 1)
    store.dispose()


@pytest.mark.parametrize("sized", [False, True])
def test_suggest_shows_sizes_in_human_units_or_unknown(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], sized: bool) -> None:
    url = f"sqlite:///{tmp_path / 'sizes.db'}"
    _events_only_store(url, sized=sized)
    code = main(["--db", url, "suggest", "--now", _iso(at(400))])
    out = capsys.readouterr().out
    assert code == 0 and "DELETE?" in out
    if sized:
        assert "850.0 kB" in out and "5.1 MB reclaimable" in out and "GB" not in out
    else:
        assert "size unknown reclaimable" in out and "size unknown" in out.split("\n")[2]
        assert " 0 B" not in out and "0.00 GB" not in out


def test_backtest_says_bytes_recall_is_unknown_without_sizes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'sizes.db'}"
    _events_only_store(url, sized=False)
    code = main(["--db", url, "backtest", "--at", _iso(at(120)), "--format", "json"])
    out = capsys.readouterr().out
    assert code == 0
    rows = json.loads(out)["results"]
    assert rows and all(r["dead_sized"] == 0 and r["dead_unsized"] > 0 for r in rows)
    code = main(["--db", url, "backtest", "--at", _iso(at(120))])
    out = capsys.readouterr().out
    assert code == 0 and "bytes recall: unknown, no size known" in out
    header = next(line for line in out.splitlines() if line.lstrip().startswith("precision"))
    width = len(header) - len(header.lstrip())  # the names' column
    table = [line[width:].split() for line in out.splitlines()
             if line.startswith(("idle", "keep"))]
    # precision, recall, bytes recall, suggested, false positives, bytes
    assert table and all(row[2] == "–" and row[5] == "–" for row in table)


# --- the demo report and the notebooks ---------------------------------------------------------


def test_demo_guardrail_labels_name_the_window() -> None:
    from bot.demo.report import guardrail_counts

    counts = guardrail_counts([
        {"blocked_by": ["deployed to production 3 days ago (within 30 days)",
                        "min age: 2 days since pushed or re-tagged (< 7 days)"]},
        {"blocked_by": ["deployed to production 1 day ago (within 30 days)"]}])
    assert counts == {"deployed to production within 30 days": 2, "min age": 1}


@pytest.mark.parametrize("name", ["01-model-review.ipynb", "02-feedback-review.ipynb"])
def test_notebooks_open_with_a_markdown_heading(name: str) -> None:
    book = json.loads((Path(__file__).parents[1] / "notebooks" / name).read_text("utf-8"))
    first = book["cells"][0]
    assert first["cell_type"] == "markdown" and first["source"][0].startswith("# ")


# --- times no registry can have written, already in the store ----------------------------------


def _absurd(store: Store) -> None:
    """Rows a sender with a broken clock left before ingest refused them."""
    from datetime import UTC

    zero, old = datetime(1, 1, 1, tzinfo=UTC), datetime(1900, 1, 1, tzinfo=UTC)
    future, end = datetime(3026, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)
    h = History(store)
    with store.begin() as conn:
        for name, when in (("zero", zero), ("old", old), ("future", future)):
            conn.execute(insert(t.manifests).values(
                repository="clock/app", digest=digest(f"clock/{name}"), first_seen=when,
                total_bytes=1000, is_index=False))
            conn.execute(insert(t.tag_history).values(
                repository="clock/app", tag=f"t-{name}", digest=digest(f"clock/{name}"),
                valid_from=when, source="scan"))
        for n, when in enumerate((zero, old, future, end)):
            conn.execute(insert(t.events).values(
                time=when, received_at=at(0), source="deploy", source_event_id=f"clock-{n}",
                action="deploy", usage="use", repository="clock/app",
                digest=digest("clock/zero"), environment="production"))
            h._rollup(conn, "clock/app", digest("clock/old"), (when - at(0)).days, "pull",
                      "use", 1)


def test_training_reads_only_the_span_real_data_covers(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from recommender.features import days, load_history
    from recommender.training import snapshot_times

    counts = []
    for name, absurd in (("clean", False), ("absurd", True)):
        store = open_store(f"sqlite:///{tmp_path / name}.db")
        _one_repository(store)
        History(store).pull("team/app", digest("team/app/b5"), 150)
        if absurd:
            _absurd(store)
        with store.connect() as conn:
            h = load_history(conn, until=at(200))
        counts.append(len(snapshot_times(h, now=days(at(200)), horizon=90, every=7)))
        store.dispose()
    assert counts[0] == counts[1] > 0  # not one weekly snapshot since the year 1
    url = f"sqlite:///{tmp_path / 'absurd.db'}"
    code = main(["--db", url, "train", "--now", _iso(at(200))])
    out = capsys.readouterr()
    assert code == 0 and "Traceback" not in out.err, out.err
    assert main(["--db", url, "inventory", "--repository", "clock/*"]) == 0
    table = capsys.readouterr().out
    assert "1-01-01" not in table and "1900-01-01" not in table and "3026" not in table
    assert table.count("unknown") >= 3


@pytest.mark.parametrize("situation", ["empty store", "uses only older than 365 days",
                                       "--now exactly at an event",
                                       "signature of a deleted subject"])
def test_first_histories_on_both_backends(situation: str, store_url: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The same on PostgreSQL, where the database computes the float days differently."""
    store = open_store(store_url)
    try:
        case = SITUATIONS[situation](store)
    finally:
        store.dispose()
    for args in (["suggest", "--all", "--format", "json"], ["train"]):
        code = main(["--db", store_url, *args, "--now", _iso(case.now)])
        out = capsys.readouterr()
        assert code == 0, out.err
    if case.why:
        code = main(["--db", store_url, "why", "@".join(case.why), "--now", _iso(case.now)])
        assert code == 0 and "verdict: " in capsys.readouterr().out

"""Recommender benchmark: features, guardrails and scoring at scale; training on a year.

Run: ``.venv/bin/python bench/model.py scale [--manifests 100000] [--events 5000000]``
and  ``.venv/bin/python bench/model.py train [--repositories 100] [--days 365] [--keep DIR]``.

``scale`` (target: under 60 s and 4 GB peak for 100,000 manifests and 5 million events) writes
a store straight into its tables: manifests in 500 repositories, tag history, daily rollups
that sum to ``--events`` use and scanner pulls (heavy-tailed per manifest, spread over a year),
production deploys and pod snapshots. It then times, each from a cold call on a fresh
connection: reading the history and computing every feature (``features.build_features``), the
guardrails (``policy.evaluate_history``), and scoring with a fitted pipeline (fitted first,
untimed, on the same rows). The events are written as the rollups the collector keeps, which is
all the features read; the raw events table is not touched by the recommender.

``quality DIR...`` backtests loaded fleets (DIR/store.db, DIR/fleet.json) 90 days before each
fleet's end: the model against the idle rule tuned on the past. ``breakdown DIR...`` explains
the ratio: dead bytes at the backtest instant by idle-days bucket, the standalone idle rule's
precision on the past snapshots for each D (its false positives by archetype, read from
fleet.json for the report only, never a feature), and the bound that gives on model / rule.
``threshold DIR... [--resamples 300]`` asks whether the operating threshold is fragile: it
fits the backtest's model, then re-chooses the threshold on bootstrap resamples of the
validation snapshots (whole manifests resampled, since one manifest appears in every weekly
snapshot) and reports what each threshold gives at the backtest instant.
``steady DIR... [--weeks 12]`` is another measure, not the issue's figure: a registry cleaned
every week from the backtest instant to the fleet's end, each method deleting what it suggests;
it reports the dead byte-days each leaves stored, what it deleted and its false positives.

``effect DIR... --drop F1,F2`` backtests with and without the named features on the same data
and split, against the idle rule tuned inside the guardrails, and prints each feature's
permutation importance. ``quality --max-train-rows N`` forces the training snapshots' sampling
(``model.max_train_rows``) to compare a sampled fit with a whole one on the same fleet.

``released DIR...`` says why weekly precision misses: the units a guardrail let through since
the previous weekly cut-off, in the weeks the threshold was chosen on and in those after the
instant: how many the threshold takes, how many of those came back, how many the model itself
expected to.

``table DIR...`` prints #14's table, one row per fleet from one backtest (one training):
mix, reuse, seed, backtest precision, the weekly runs' precision after the first (pooled, and
the worst week), bytes recall of the eligible dead bytes, model ÷ the idle rule tuned inside
the guardrails (and its D), threshold efficiency, and which targets the row misses.
``make-fleet DIR --mix M --reuse R --seed S --repositories N [--days 365]`` generates and loads
one fleet for it.

``train`` (target: under 8 minutes and 6 GB for 500 repositories; #14) generates a fleet
with ``recommender.fleet`` (seed 1, the default mix), loads it with the collector's own ingest
functions, then times
``model.train`` as of the fleet's last day. ``--keep DIR`` reuses a loaded fleet.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402

from recommender import config as config_mod  # noqa: E402
from recommender.features import build_features, load_history  # noqa: E402
from recommender.model import Fitted, make_pipeline  # noqa: E402
from recommender.policy import evaluate_history  # noqa: E402
from recommender.store import Store, open_store  # noqa: E402
from recommender.store import tables as t  # noqa: E402
from recommender.training import Metrics  # noqa: E402

NOW = datetime(2026, 1, 1, tzinfo=UTC)
START = NOW - timedelta(days=365)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_scale_store(store: Store, manifests: int, events: int, seed: int = 1) -> int:
    """Fill the tables; returns the number of rollup rows."""
    rng = np.random.default_rng(seed)
    repos = 500
    repo_of = rng.integers(0, repos, manifests)
    pushed = START + np.sort(rng.uniform(0, 365, manifests)) * timedelta(days=1)  # type: ignore[operator]
    digests = [f"sha256:{i:064x}" for i in range(manifests)]
    rows = [{"repository": f"team{r % 40}/svc{r}", "digest": d, "first_seen": p,
             "total_bytes": int(s), "size": 1200, "is_index": False}
            for r, d, p, s in zip(repo_of, digests, pushed,
                                  rng.lognormal(18.5, 1.0, manifests), strict=True)]
    kinds = rng.choice(["sha-{:07x}", "v1.{}.0", "build-{}", "pr-{}"], manifests,
                       p=[0.5, 0.2, 0.2, 0.1])
    tags = [{"repository": m["repository"], "tag": k.format(i), "digest": m["digest"],
             "valid_from": m["first_seen"], "valid_to": None, "source": "push"}
            for i, (m, k) in enumerate(zip(rows, kinds, strict=True))]
    # Events per manifest: heavy-tailed, summing to ``events``; each active day is one rollup.
    weights = rng.pareto(1.2, manifests) + 0.05
    per = np.floor(weights / weights.sum() * events).astype(int)
    per[: events - int(per.sum())] += 1
    rollups = []
    for i in np.flatnonzero(per):
        n = int(per[i])
        active = int(min(n, max(1, rng.geometric(0.01))))
        age = (NOW - rows[i]["first_seen"]).total_seconds() / 86400  # type: ignore[operator]
        offsets = np.sort(rng.uniform(0, age, active))
        counts = rng.multinomial(n - active, np.full(active, 1 / active)) + 1
        usage = "scanner" if rng.random() < 0.15 else "use"
        seen = set()
        for off, c in zip(offsets, counts, strict=True):
            moment = rows[i]["first_seen"] + timedelta(days=float(off))  # type: ignore[operator]
            day = moment.date()
            if day in seen:
                continue
            seen.add(day)
            rollups.append({"day": day, "repository": rows[i]["repository"],
                            "digest": digests[i], "tag": "", "action": "pull", "usage": usage,
                            "count": int(c), "first_at": moment, "last_at": moment})
    deploys = [{"time": rows[i]["first_seen"] + timedelta(hours=2),
                "received_at": rows[i]["first_seen"] + timedelta(hours=2), "source": "deploy",
                "source_event_id": f"d{i}", "action": "deploy", "usage": "use",
                "repository": rows[i]["repository"], "digest": digests[i],
                "environment": "production"}
               for i in rng.choice(manifests, manifests // 20, replace=False)]
    with store.begin() as conn:
        for table, data in ((t.manifests, rows), (t.tag_history, tags), (t.rollups, rollups),
                            (t.events, deploys)):
            for k in range(0, len(data), 20000):
                conn.execute(insert(table), data[k:k + 20000])
        for cluster in range(3):
            sid = conn.execute(insert(t.k8s_snapshots).values(
                source=f"cluster-{cluster}", taken_at=NOW - timedelta(hours=1), pods=2000,
            ).returning(t.k8s_snapshots.c.id)).scalar_one()
            running = rng.choice(manifests, 2000, replace=False)
            conn.execute(insert(t.running_refs), [
                {"snapshot_id": sid, "registry": "reg", "repository": rows[i]["repository"],
                 "digest": digests[i], "image": "x"} for i in running])
    return len(rollups)


def scale(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(f"sqlite:///{tmp}/bench.db")
        began = time.perf_counter()
        n_rollups = write_scale_store(store, args.manifests, args.events)
        print(f"wrote {args.manifests} manifests, {args.events} events as {n_rollups} rollup "
              f"rows in {time.perf_counter() - began:.1f} s (untimed)")
        cfg = config_mod.load(env={})
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        with store.connect() as conn:
            h = load_history(conn, until=NOW)
        t1 = time.perf_counter()
        from recommender.features import features_at

        frame = features_at(h, NOW)
        t2 = time.perf_counter()
        blocked = evaluate_history(h, cfg, NOW)
        t3 = time.perf_counter()
        cpu1 = time.process_time()
        frame["eligible"] = [not blocked[k] for k in zip(frame["repository"], frame["digest"],
                                                          strict=True)]
        label = (frame["idle_days"] > 60).astype(int).to_numpy()
        pipe = make_pipeline()
        pipe.fit(frame, label)  # untimed: only to have a fitted model of the real shape
        model = Fitted(pipe, 0.5, Metrics(0, 0, 1, 0, 0, 0, 0), {}, {}, False)
        t4 = time.perf_counter()
        cpu2 = time.process_time()
        scores = model.score(frame)
        t5 = time.perf_counter()
        cpu = time.process_time() - cpu2 + cpu1 - cpu0
        print(f"read history        {t1 - t0:6.1f} s")
        print(f"features            {t2 - t1:6.1f} s  ({len(frame)} units)")
        print(f"guardrails          {t3 - t2:6.1f} s")
        print(f"scoring             {t5 - t4:6.1f} s  ({len(scores)} scores)")
        print(f"total               {t3 - t0 + t5 - t4:6.1f} s  (target < 60 s); "
              f"CPU {cpu:.1f} s")
        print(f"peak memory         {peak_mb():6.0f} MB (target < 4096 MB)")
        # The same through the public one-call entry point, for the record.
        t6 = time.perf_counter()
        with store.connect() as conn:
            build_features(conn, now=NOW)
        print(f"build_features()    {time.perf_counter() - t6:6.1f} s  (cold call, again)")
        store.dispose()


def train_bench(args: argparse.Namespace) -> None:
    from recommender.fleet import FleetSpec, generate
    from recommender.model import train

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-model-"))
    db = root / "store.db"
    store = open_store(f"sqlite:///{db}")
    if not (root / "loaded").exists():
        began = time.perf_counter()
        spec = FleetSpec(seed=1, repositories=args.repositories, days=args.days)
        files = generate(spec, root / "fleet")
        load_fleet(store, files)
        (root / "loaded").write_text("ok\n")
        print(f"generated and loaded the fleet in {time.perf_counter() - began:.0f} s "
              "(untimed)")
    cfg = config_mod.load(env={}, overrides={"model.dir": str(root / "models")})
    last = datetime.combine(FleetSpec().start, datetime.min.time(), UTC) + timedelta(
        days=args.days)
    began, cpu = time.perf_counter(), time.process_time()
    report = train(store, cfg, now=last)
    took, cpu = time.perf_counter() - began, time.process_time() - cpu
    print(f"train: {report.snapshots} snapshots, {report.message}")
    if report.new:
        print(f"validation: precision {report.new.precision:.4f}, bytes recall "
              f"{report.new.bytes_recall:.3f}")
    print(f"training took {took:.1f} s, CPU {cpu:.1f} s; peak memory {peak_mb():.0f} MB "
          "(#14: under 8 minutes and 6 GB at 500 repositories)")


def load_fleet(store: Store, files: object) -> None:
    """The collector's own ingest path: the CLI commands, run in-process."""
    from recommender.cli import main

    url = str(store.engine.url)
    directory = Path(files.distribution).parent  # type: ignore[attr-defined]
    for argv in (["fleet", "load-inventory", str(directory / "inventory.jsonl")],
                 ["ingest", "distribution", str(directory / "distribution.jsonl.gz")],
                 ["ingest", "deploys", str(directory / "deploys.jsonl")],
                 ["ingest", "k8s", str(directory / "pods.jsonl")]):
        if main(["--db", url, *argv]) != 0:
            raise SystemExit(f"loading failed: {' '.join(argv)}")


def _fleet_window(root: Path) -> tuple[dict[str, Any], datetime, datetime]:
    """A loaded fleet's ``fleet.json``, its end, and the backtest instant 90 days before."""
    fleet = json.loads((root / "fleet.json").read_text())
    spec = fleet["spec"]
    end = datetime.fromisoformat(spec["start"]).replace(tzinfo=UTC) + timedelta(
        days=int(spec["days"]))
    return fleet, end, end - timedelta(days=90)


def quality(args: argparse.Namespace) -> None:
    """Backtests on loaded fleets: model against the idle rule tuned on the past."""
    from recommender.model import backtest

    overrides = {"model.max_train_rows": args.max_train_rows} if args.max_train_rows else {}
    cfg = config_mod.load(env={}, overrides=overrides)
    print("| fleet | at | model: precision | recall | bytes recall | false pos. | suggested "
          "| idle rule inside guardrails (tuned on past): precision, bytes recall | model bytes "
          "÷ it | idle rule on its own: precision, bytes recall | model bytes ÷ it |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for directory in args.fleets:
        root = Path(directory)
        fleet, end, at = _fleet_window(root)
        meta = fleet["spec"]
        if args.at is not None:
            at = datetime.fromisoformat(args.at).replace(tzinfo=UTC)
        store = open_store(f"sqlite:///{root / 'store.db'}")
        began, cpu = time.perf_counter(), time.process_time()
        report = backtest(store, cfg, at=at, now=end)
        rows = {r["name"]: r for r in report.rows}
        from recommender.fleet import MIXES

        mix = next((name for name, weights in MIXES.items() if weights == meta["mix"]),
                   "custom mix")
        label = f"seed {meta['seed']}, {meta['repositories']} repos, {mix}"
        m = rows.get("model")
        if m is None:
            print(f"| {label} | {at:%Y-%m-%d} | {report.message} |")
            continue

        def dead(r: dict[str, float]) -> float:
            return r["bytes_recall"] * r["dead_bytes"]

        cells = [f"{m['precision']:.4f}", f"{m['recall']:.3f}", f"{m['bytes_recall']:.3f}",
                 str(m["false_positives"]), str(m["suggested"])]
        for name in ("idle rule", "idle alone"):
            r = rows[name]
            ratio = dead(m) / dead(r) if dead(r) else float("inf")
            cells += [f"{r['rule']}: {r['precision']:.4f}, {r['bytes_recall']:.3f}",
                      f"{ratio:.2f}x"]
        print(f"| {label} | {at:%Y-%m-%d} | " + " | ".join(cells) + " |")
        generator = fleet.get("generator", "unrecorded")
        print(f"<!-- {root}: generator {generator}, {time.perf_counter() - began:.0f} s wall, "
              f"{time.process_time() - cpu:.0f} CPU-s, threshold "
              f"{report.threshold}, training {report.training} -->")
        store.dispose()


IDLE_BUCKETS = (-1.0, 7, 14, 21, 30, 45, 60, 90, 120, 180, 1e9)


def breakdown(args: argparse.Namespace) -> None:
    """Why model / idle rule is what it is: where the dead bytes are, and the rule's D."""
    import pandas as pd

    from recommender.features import days
    from recommender.model import _prepare
    from recommender.training import RuleBaseline, label_snapshot, metrics, tune_idle_rule

    cfg = config_mod.load(env={})
    for directory in args.fleets:
        root = Path(directory)
        fleet, end, at = _fleet_window(root)
        meta = fleet["spec"]
        archetype = {r["name"]: r["archetype"] for r in fleet["repositories"]}
        store = open_store(f"sqlite:///{root / 'store.db'}")
        cpu = time.process_time()
        h, times, past = _prepare(store, cfg, at, 90.0, end)
        test = label_snapshot(h, cfg, days(at), 90.0)
        store.dispose()
        print(f"\n## {root} (seed {meta['seed']}), backtest at {at:%Y-%m-%d}, "
              f"{len(times)} past snapshots ({time.process_time() - cpu:.0f} CPU-s)")
        dead = test["dead"] == 1
        size = test["bytes"].astype(float)
        total, eligible_total = size[dead].sum(), size[dead & test["eligible"]].sum()
        bucket = pd.cut(test["idle_days"], IDLE_BUCKETS)
        print("| idle days at the instant | manifests | used later | dead GB | dead GB no "
              "guardrail keeps | share of dead bytes idle more than the bucket's start |")
        print("|---|---|---|---|---|---|")
        above = 1.0
        for b, g in test.groupby(bucket, observed=False):
            gd = g["dead"] == 1
            gb = g["bytes"].astype(float)
            print(f"| {b} | {len(g)} | {int((~gd).sum())} | {gb[gd].sum() / 1e9:.1f} | "
                  f"{gb[gd & g['eligible']].sum() / 1e9:.1f} | {above:.3f} |")
            above -= gb[gd].sum() / total if total else 0.0
        arch = past["repository"].map(archetype)
        print("\n| D | past: suggested | past: used later (by archetype) | past precision "
              "| at the instant: precision | bytes recall | eligible dead bytes / its dead "
              "bytes (bound on model ÷ rule) |")
        print("|---|---|---|---|---|---|---|")
        for d in (7, 14, 21, 30, 45, 60, 90, 120, 180):
            rule = RuleBaseline("idle", float(d), "all")
            pick = rule.suggest(past)
            m = metrics(past, pick, scope="all")
            fps = arch[pick & (past["dead"] == 0).to_numpy()].value_counts().to_dict()
            mt = metrics(test, rule.suggest(test), scope="all")
            got = mt.bytes_recall * mt.dead_bytes
            bound = eligible_total / got if got else float("inf")
            print(f"| {d} | {m.suggested} | {m.false_positives} {fps} | {m.precision:.5f} | "
                  f"{mt.precision:.5f} | {mt.bytes_recall:.3f} | {bound:.2f}x |")
        chosen = tune_idle_rule(past, float(cfg["model.target_precision"]), "all")
        print(f"\ntuned on the past (0.999): {chosen.describe()}; dead bytes {total / 1e9:.1f} GB, "
              f"of which no guardrail keeps {eligible_total / 1e9:.1f} GB")


def released(args: argparse.Namespace) -> None:
    """Units a guardrail let through since the previous weekly cut-off: what the threshold's
    weeks held of them, against the weeks after the backtest instant.

    The model's threshold is chosen on the calibration (but its first) and validation
    snapshots (``model.fit``); once a registry is clean, a weekly run judges mostly units just
    released, and these come back most. For both stretches of weeks: released units, those at
    or above the threshold, how many of those were used again (within the horizon before the
    instant; before the fleet's end after it, as the table's weekly runs count), how many the
    model itself expected (the sum of 1 - P(dead)), and how many of all released ones were
    used again, by archetype (read from fleet.json for the report only, never a feature).
    """
    from collections import Counter

    import pandas as pd

    from recommender.features import days
    from recommender.model import _prepare, fit
    from recommender.training import label_snapshot, newly_eligible, split_by_time

    cfg = config_mod.load(env={})
    horizon = cfg["model.horizon"].total_seconds() / 86400
    print("| fleet | weeks | threshold | released | at or above it | used of those | expected "
          "by the model | used of all released (by archetype) |")
    print("|---|---|---|---|---|---|---|---|")
    for directory in args.fleets:
        root = Path(directory)
        fleet, end, at = _fleet_window(root)
        archetype = {r["name"]: r["archetype"] for r in fleet["repositories"]}
        store = open_store(f"sqlite:///{root / 'store.db'}")
        h, times, past = _prepare(store, cfg, at, horizon, end)
        store.dispose()
        if len(times) < 3:
            print(f"| {root.name} | fewer than 3 past snapshots | | | | | | |")
            continue
        split = split_by_time(times)
        fitted = fit(past, split, cfg, extra=past.attrs.get("feedback"))
        chosen = [*split.calibrate[1:], *split.validate]
        cuts = [float(t) for t in np.arange(days(at), days(end) - 1e-9, 7.0)]
        after = pd.concat([label_snapshot(h, cfg, t, days(end) - t) for t in cuts],
                          ignore_index=True) if cuts else past.iloc[:0]
        frames = [("threshold's", len(chosen), past[newly_eligible(past, chosen)]),
                  ("after the instant", max(len(cuts) - 1, 0), after[newly_eligible(after, cuts)])]
        for name, weeks, rows in frames:
            score = fitted.score(rows)
            taken = score >= fitted.threshold
            used = rows["dead"].to_numpy() == 0
            kinds = Counter(rows["repository"][used].map(archetype))
            print(f"| {root.name} | {name} ({weeks}) | {fitted.threshold:.5f} | {len(rows)} | "
                  f"{int(taken.sum())} | {int((taken & used).sum())} | "
                  f"{float((1.0 - score[taken]).sum()):.2f} | {int(used.sum())} "
                  f"{dict(sorted(kinds.items()))} |", flush=True)


def threshold(args: argparse.Namespace) -> None:
    """Bootstrap the validation snapshots: how much does the chosen threshold move?"""
    from recommender.features import days
    from recommender.model import _prepare, choose_threshold, fit
    from recommender.training import label_snapshot, split_by_time

    cfg = config_mod.load(env={})
    target = float(cfg["model.target_precision"])
    for directory in args.fleets:
        root = Path(directory)
        fleet, end, at = _fleet_window(root)
        meta = fleet["spec"]
        store = open_store(f"sqlite:///{root / 'store.db'}")
        cpu = time.process_time()
        h, times, past = _prepare(store, cfg, at, 90.0, end)
        test = label_snapshot(h, cfg, days(at), 90.0)
        store.dispose()
        split = split_by_time(times)
        fitted = fit(past, split, cfg, extra=past.attrs.get("feedback"))
        val = past[past["at"].isin(split.validate) & past["eligible"]]
        test = test[test["eligible"]]
        vs, vd = fitted.score(val), val["dead"].to_numpy()
        ts, td = fitted.score(test), test["dead"].to_numpy() == 1
        tb = test["bytes"].to_numpy(dtype=float)
        groups = list(val.groupby(["repository", "digest"]).indices.values())
        rng = np.random.default_rng(0)
        out = []
        for _ in range(args.resamples):
            rows = np.concatenate([groups[i] for i in rng.integers(0, len(groups), len(groups))])
            thr = choose_threshold(vs[rows], vd[rows], target)
            pick = ts >= thr
            out.append((thr, tb[pick & td].sum() / tb[td].sum(),
                        1 - (pick & ~td).sum() / max(int(pick.sum()), 1)))
        r = np.array(out)
        lo, hi = np.percentile(r[:, 0], [5, 95])
        print(f"{root} (seed {meta['seed']}): validation {len(val)} eligible, "
              f"{int((vd == 0).sum())} used later; threshold {fitted.threshold:.4f} "
              f"(resampled 5-95 %: {lo:.4f}-{hi:.4f}); at {at:%Y-%m-%d} bytes recall median "
              f"{np.median(r[:, 1]):.3f}, 5th percentile {np.percentile(r[:, 1], 5):.3f}, "
              f">= 0.95 in {(r[:, 1] >= 0.95).mean():.0%} of {args.resamples} resamples; "
              f"lowest precision {r[:, 2].min():.4f} ({time.process_time() - cpu:.0f} CPU-s)")


def steady(args: argparse.Namespace) -> None:
    """A registry cleaned every week (not the issue's figure): dead byte-days each method leaves.

    At the backtest instant ``at`` (90 days before the fleet's end) the model is trained and the
    idle rule tuned exactly as ``model.backtest`` does (``_prepare``, ``fit``,
    ``tune_idle_rule``: private ones called from here on purpose, so nothing is re-implemented).
    Then at ``at``, ``at + 7 d``, ... (while ``<= end``) each method suggests from the features
    and guardrails of that instant (``training.label_snapshot``) with its fixed threshold or D,
    and what it suggests is deleted: gone from its later runs. Dead bytes at a day are the
    bytes of units alive that day (``features.alive_units``) that nothing uses again before the
    fleet's end (``features.used_in_window``, the labels' own logic); they are summed over
    daily samples from ``at`` to the end, leaving out what the method deleted by then.
    The guardrails at later runs are computed on the recorded history, where the method's
    deletions did not happen: a deleted unit was eligible (not among the last N versions, not
    protected), so it cannot be what keeps another one.
    """
    from recommender.features import alive_units, days, used_in_window
    from recommender.model import _prepare, fit
    from recommender.training import label_snapshot, split_by_time, tune_idle_rule

    cfg = config_mod.load(env={})
    target = float(cfg["model.target_precision"])
    horizon = cfg["model.horizon"].total_seconds() / 86400
    for directory in args.fleets:
        root = Path(directory)
        fleet, end, at = _fleet_window(root)
        meta = fleet["spec"]
        # Read for the report only (false positives by archetype), never a feature.
        archetype = {r["name"]: r["archetype"] for r in fleet["repositories"]}
        store = open_store(f"sqlite:///{root / 'store.db'}")
        began, cpu = time.perf_counter(), time.process_time()
        # As backtest: training sees only cut-offs whose horizon ended by ``at``.
        h, times, past = _prepare(store, cfg, at, horizon, end)
        store.dispose()
        if len(times) < 3:
            print(f"{root}: fewer than 3 past snapshots, no model to run")
            continue
        fitted = fit(past, split_by_time(times), cfg, extra=past.attrs.get("feedback"))
        inside = tune_idle_rule(past[past["eligible"]], target)
        alone = tune_idle_rule(past, target, "all")
        trained = time.process_time() - cpu

        # name -> (setting, scorer: the fitted model or a tuned rule, restricted to eligible?)
        methods: dict[str, tuple[str, Any, bool]] = {
            "model": (f"P(dead) >= {fitted.threshold:.4f}", fitted, True),
            "idle rule inside guardrails": (f"D = {int(inside.parameter)} d", inside, True),
            "idle rule on its own": (f"D = {int(alone.parameter)} d", alone, False),
        }
        gone: dict[str, dict[tuple[str, str], float]] = {name: {} for name in methods}
        stats = {name: {"bytes": 0.0, "first_bytes": 0.0, "count": 0, "first_count": 0,
                        "fp": 0, "fp_late": 0, "fp_bytes": 0.0} for name in methods}
        fp_kinds: dict[str, dict[str, int]] = {name: {} for name in methods}
        t0, t_end = days(at), days(end)
        runs = 0
        s = t0
        while s <= t_end + 1e-9 and runs <= args.weeks:
            # Horizon up to the fleet's end: "dead" = nothing used it after s, before the end.
            frame = label_snapshot(h, cfg, s, t_end - s)
            keys = list(zip(frame["repository"], frame["digest"], strict=True))
            size = frame["bytes"].to_numpy(dtype=float)
            used = frame["dead"].to_numpy() == 0
            eligible = frame["eligible"].to_numpy(dtype=bool)
            for name, (_, scorer, guarded) in methods.items():
                deleted = gone[name]
                present = np.array([k not in deleted for k in keys], dtype=bool)
                # Fitted.suggest already keeps to the eligible; the rule is & eligible inside.
                chosen = np.asarray(scorer.suggest(frame), dtype=bool) & present
                if guarded:
                    chosen &= eligible
                st = stats[name]
                for i in np.flatnonzero(chosen):
                    deleted[keys[i]] = s
                st["count"] += int(chosen.sum())
                st["bytes"] += float(size[chosen].sum())
                if runs == 0:
                    st["first_count"], st["first_bytes"] = int(chosen.sum()), float(
                        size[chosen].sum())
                fp = chosen & used
                st["fp"] += int(fp.sum())
                st["fp_bytes"] += float(size[fp].sum())
                for i in np.flatnonzero(fp):
                    kind = f"{archetype.get(keys[i][0], '?')}@{int(frame['idle_days'].iat[i])}d"
                    fp_kinds[name][kind] = fp_kinds[name].get(kind, 0) + 1
                if t_end - s < horizon:
                    st["fp_late"] += int(fp.sum())
            runs += 1
            s += 7.0
        # Dead byte-days: one sample per day at the instant's time of day, each weighing 1 day.
        never = 0.0
        held = dict.fromkeys(methods, 0.0)
        day = t0
        while day < t_end - 1e-9:
            alive = alive_units(h, day)
            later = used_in_window(h, day, t_end)
            for repo, digest, b in alive[["repository", "digest", "bytes"]].itertuples(
                    index=False):
                key = (repo, digest)
                if key in later:
                    continue
                never += b
                for name in methods:
                    when = gone[name].get(key)
                    if when is None or when > day:
                        held[name] += b
            day += 1.0
        took = time.perf_counter() - began
        print(f"\n## {root} (seed {meta['seed']}), weekly runs from {at:%Y-%m-%d} to "
              f"{end:%Y-%m-%d}: {runs} runs; {took:.0f} s wall, "
              f"{time.process_time() - cpu:.0f} CPU-s ({trained:.0f} CPU-s to train and tune)")
        print(f"never deleting: {never / 1e12:.2f} TB-days of dead bytes held")
        # The model's threshold: each population's own, and the steady-state subset's figures.
        print(f"model threshold {fitted.threshold:.4f} (whole validation snapshots "
              f"{getattr(fitted, 'thresholds', {}).get('whole')}, steady-state subset "
              f"{getattr(fitted, 'thresholds', {}).get('steady')}); validation "
              f"{fitted.validation.as_dict()}; steady-state subset "
              f"({fitted.rows.get('validate_steady')} rows) "
              f"{fitted.steady.as_dict() if fitted.steady is not None else None}")
        print("| method | setting | dead TB-days held | saved vs never deleting | deleted GB "
              "(first run / later runs) | manifests deleted (first / later) | false pos. "
              "(of which < 90 d horizon) | false pos. GB |")
        print("|---|---|---|---|---|---|---|---|")
        for name, (setting, _, _) in methods.items():
            st = stats[name]
            print(f"| {name} | {setting} | {held[name] / 1e12:.2f} | "
                  f"{(never - held[name]) / never:.3f} | "
                  f"{st['bytes'] / 1e9:.1f} ({st['first_bytes'] / 1e9:.1f} / "
                  f"{(st['bytes'] - st['first_bytes']) / 1e9:.1f}) | "
                  f"{st['count']} ({st['first_count']} / {st['count'] - st['first_count']}) | "
                  f"{st['fp']} ({st['fp_late']}) | {st['fp_bytes'] / 1e9:.2f} |")
        for name in methods:
            kinds = sorted(fp_kinds[name].items(), key=lambda kv: -kv[1])
            print(f"false positives of {name} (archetype@idle days when deleted): "
                  + ", ".join(f"{k} x{n}" for k, n in kinds))
        saved = {name: never - held[name] for name in methods}
        for name in ("idle rule inside guardrails", "idle rule on its own"):
            ratio = saved["model"] / saved[name] if saved[name] else float("inf")
            held_ratio = held[name] / held["model"] if held["model"] else float("inf")
            print(f"model ÷ {name}, dead byte-days saved: {ratio:.2f}x; dead byte-days "
                  f"{name} holds ÷ the model's: {held_ratio:.2f}x")


def _mix_name(mix: dict[str, float]) -> str:
    from recommender.fleet import MIXES

    return next((name for name, weights in MIXES.items() if weights == mix), "custom mix")


def make_fleet(args: argparse.Namespace) -> None:
    """Generate a fleet and load it into DIR/store.db, as ``table`` and the others read it."""
    from recommender.fleet import FleetSpec, generate, parse_mix

    root = Path(args.dir)
    if (root / "loaded").exists():
        raise SystemExit(f"{root} already holds a loaded fleet")
    began = time.perf_counter()
    spec = FleetSpec(seed=args.seed, repositories=args.repositories, days=args.days,
                     mix=parse_mix(args.mix), reuse=args.reuse,
                     prehistory_days=args.prehistory_days)
    files = generate(spec, root / "fleet")
    generated = time.perf_counter() - began
    (root / "fleet.json").symlink_to(Path("fleet") / "fleet.json")
    load_fleet(open_store(f"sqlite:///{root / 'store.db'}"), files)
    (root / "loaded").write_text("ok\n")
    print(f"{root}: {args.mix}, reuse {args.reuse}, seed {args.seed}, {args.repositories} "
          f"repositories, {args.days} days: generated in {generated:.0f} s, loaded in "
          f"{time.perf_counter() - began - generated:.0f} s")


TARGETS = "precision >= 0.999 (backtest and pooled weekly), efficiency >= 0.9, ratio >= 1.0 " \
    "(>= 1.5 where D >= 60 d)"


def table(args: argparse.Namespace) -> None:
    """One markdown row per fleet: the backtest (one training) with its weekly runs.

    ``model.backtest`` at 90 days before each fleet's end trains once, tunes the idle rule
    inside the guardrails on the same past (to the target on whole snapshots and in weekly
    operation, as the model's threshold; and, for comparison, on whole snapshots alone), and
    runs them every week to the end (``recommender.evaluation``: a weekly suggestion is false
    when the unit is used before the fleet's end, a window that shortens run by run). The
    targets are those of #14; the ratio that counts is against the rule held to the weekly
    standard too.
    """
    from recommender.model import backtest

    cfg = config_mod.load(env={})
    target = float(cfg["model.target_precision"])
    print(f"| mix | reuse | seed | repos | backtest precision | weekly precision, later runs "
          f"(worst week) | bytes recall, eligible dead bytes | model ÷ idle rule inside "
          f"guardrails (D) | threshold efficiency | targets ({TARGETS}) | idle rule's weekly "
          f"precision | model ÷ idle rule tuned on whole snapshots only (D) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for directory in args.fleets:
        root = Path(directory)
        fleet, end, at = _fleet_window(root)
        meta = fleet["spec"]
        store = open_store(f"sqlite:///{root / 'store.db'}")
        began, cpu = time.perf_counter(), time.process_time()
        report = backtest(store, cfg, at=at, now=end)
        store.dispose()
        head = (f"| {_mix_name(meta['mix'])} | {meta.get('reuse', 'medium')} | {meta['seed']} "
                f"| {meta['repositories']} |")
        model, rule = report.row("model"), report.row("idle rule")
        if model is None or rule is None:
            print(f"{head} {report.message} | | | | | no model | | |")
            continue
        weekly = report.weekly["model"]
        ratio = report.ratio() or 0.0
        d = _days(rule["rule"])
        eff = report.efficiency
        missed = []
        if model["precision"] < target:
            missed.append("precision")
        if weekly.precision < target:
            missed.append("weekly precision")
        if eff is not None and eff.value is not None and eff.value < 0.9:
            missed.append("efficiency")
        if ratio < (1.5 if d >= 60 else 1.0):
            missed.append(f"ratio < {1.5 if d >= 60 else 1.0}")
        rule_weekly = report.weekly["idle rule"]
        whole = report.row("idle (whole)")
        cells = [
            f"{model['precision']:.5f} ({model['false_positives']}/{model['suggested']})",
            _weekly_cell(weekly),
            f"{model['bytes_recall']:.3f}",
            f"{ratio:.2f}x ({d} d)",
            f"{eff.value:.3f}" if eff is not None and eff.value is not None else
            f"n/a ({eff.reason if eff else 'no model'})",
            "met" if not missed else "missed: " + ", ".join(missed),
            _weekly_cell(rule_weekly),
            f"{report.ratio('idle (whole)') or 0.0:.2f}x ({_days(whole['rule'])} d)"
            if whole else "n/a",
        ]
        print(head + " " + " | ".join(cells) + " |", flush=True)
        print(f"<!-- {root}: generator {fleet.get('generator', 'unrecorded')}, backtest at "
              f"{at:%Y-%m-%d}, threshold {report.threshold}, {time.perf_counter() - began:.0f} s "
              f"wall, {time.process_time() - cpu:.0f} CPU-s, peak {peak_mb():.0f} MB -->",
              flush=True)


def _days(rule: str) -> int:
    return int(re.search(r"(\d+) days", rule).group(1))  # type: ignore[union-attr]


def _weekly_cell(weekly: Any) -> str:
    """Pooled precision of the runs after the first, its counts, and the worst week."""
    later_fp = sum(r.false_positives for r in weekly.later)
    later_n = sum(r.suggested for r in weekly.later)
    worst = weekly.worst
    return (f"{weekly.precision:.5f} ({later_fp}/{later_n})"
            + (f" ({worst.precision:.4f})" if worst else ""))


def effect(args: argparse.Namespace) -> None:
    """Backtest with and without ``--drop`` features, and every feature's permutation importance.

    The same data and split train both models (``model.FEATURES`` is swapped for the second
    fit, as ``bench/clients.py`` does); each is judged at the backtest instant against the idle
    rule tuned inside the guardrails on the same past. Importance is the drop in ROC AUC when
    one column of a sample of the eligible validation rows is shuffled (``sklearn.inspection``).
    """
    from sklearn.inspection import permutation_importance

    from recommender import model as model_mod
    from recommender.features import FEATURES, days
    from recommender.training import label_snapshot, run_every, split_by_time, tune_idle_rule

    cfg = config_mod.load(env={})
    target = float(cfg["model.target_precision"])
    drop = tuple(x for x in args.drop.split(",") if x)
    unknown = [x for x in drop if x not in FEATURES]
    if unknown:
        raise SystemExit(f"unknown features: {', '.join(unknown)}")
    for directory in args.fleets:
        root = Path(directory)
        fleet, end, at = _fleet_window(root)
        store = open_store(f"sqlite:///{root / 'store.db'}")
        began, cpu = time.perf_counter(), time.process_time()
        h, times, data = model_mod._prepare(store, cfg, at, 90.0, end)
        test = label_snapshot(h, cfg, days(at), 90.0)
        store.dispose()
        split = split_by_time(times)
        rule = tune_idle_rule(data[data["eligible"]], target, every=run_every(cfg))
        from recommender.training import metrics

        rm = metrics(test, rule.suggest(test))
        rule_bytes = rm.bytes_recall * rm.dead_bytes
        print(f"\n## {root} (seed {fleet['spec']['seed']}, reuse "
              f"{fleet['spec'].get('reuse', 'medium')}), backtest at {at:%Y-%m-%d}; idle rule "
              f"inside guardrails: D = {int(rule.parameter)} d, precision {rm.precision:.4f}, "
              f"bytes recall {rm.bytes_recall:.3f}")
        fitted_all = None
        for label, features in (("all features", FEATURES),
                                (f"without {', '.join(drop)}",
                                 tuple(f for f in FEATURES if f not in drop))):
            if label.startswith("without") and not drop:
                continue
            model_mod.FEATURES = features  # what make_pipeline, fit and score read
            try:
                fitted = model_mod.fit(data, split, cfg, extra=data.attrs.get("feedback"))
                m = metrics(test, fitted.suggest(test))
            finally:
                model_mod.FEATURES = FEATURES
            got = m.bytes_recall * m.dead_bytes
            print(f"{label}: precision {m.precision:.4f}, bytes recall {m.bytes_recall:.3f}, "
                  f"false pos. {m.false_positives} / {m.suggested}, model ÷ rule "
                  f"{got / rule_bytes if rule_bytes else float('inf'):.2f}x, threshold "
                  f"{fitted.threshold:.4f}", flush=True)
            if fitted_all is None:
                fitted_all = fitted
        assert fitted_all is not None
        val = data[data["at"].isin(split.validate) & data["eligible"]]
        sample = val.sample(n=min(args.sample, len(val)), random_state=7)
        imp = permutation_importance(
            fitted_all.estimator, sample[list(FEATURES)], sample["dead"].to_numpy(),
            scoring="roc_auc", n_repeats=3, random_state=7)
        order = np.argsort(-imp.importances_mean)
        print("importance (ROC AUC drop, " f"{len(sample)} validation rows): " + ", ".join(
            f"{FEATURES[i]} {imp.importances_mean[i]:.4f}" for i in order[:12]))
        for name in drop:
            i = FEATURES.index(name)
            rank = int(np.flatnonzero(order == i)[0]) + 1
            print(f"  {name}: {imp.importances_mean[i]:.5f} (rank {rank} of {len(FEATURES)})")
        print(f"{time.perf_counter() - began:.0f} s wall, {time.process_time() - cpu:.0f} CPU-s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("scale")
    s.add_argument("--manifests", type=int, default=100_000)
    s.add_argument("--events", type=int, default=5_000_000)
    tr = sub.add_parser("train")
    tr.add_argument("--repositories", type=int, default=100)
    tr.add_argument("--days", type=int, default=365)
    tr.add_argument("--keep", help="Directory to keep (and reuse) the loaded fleet in.")
    q = sub.add_parser("quality")
    q.add_argument("fleets", nargs="+", help="Fleet directories loaded into DIR/store.db.")
    q.add_argument("--at", help="Backtest instant (default: 90 days before the fleet's end).")
    q.add_argument("--max-train-rows", type=int, default=0,
                   help="model.max_train_rows for this run (default: the setting's).")
    b = sub.add_parser("breakdown")
    b.add_argument("fleets", nargs="+", help="Fleet directories loaded into DIR/store.db.")
    th = sub.add_parser("threshold")
    th.add_argument("fleets", nargs="+", help="Fleet directories loaded into DIR/store.db.")
    th.add_argument("--resamples", type=int, default=300)
    st = sub.add_parser("steady")
    st.add_argument("fleets", nargs="+", help="Fleet directories loaded into DIR/store.db.")
    st.add_argument("--weeks", type=int, default=12,
                    help="Runs at t, t+7d, ..., t+7*WEEKS (never past the fleet's end).")
    ef = sub.add_parser("effect")
    ef.add_argument("fleets", nargs="+", help="Fleet directories loaded into DIR/store.db.")
    ef.add_argument("--drop", default="", help="Comma-separated features to fit without.")
    ef.add_argument("--sample", type=int, default=20000,
                    help="Validation rows the permutation importance shuffles.")
    rl = sub.add_parser("released")
    rl.add_argument("fleets", nargs="+", help="Fleet directories loaded into DIR/store.db.")
    tb = sub.add_parser("table")
    tb.add_argument("fleets", nargs="+", help="Fleet directories loaded into DIR/store.db.")
    mk = sub.add_parser("make-fleet")
    mk.add_argument("dir", help="Directory to generate the fleet in and load DIR/store.db.")
    mk.add_argument("--mix", default="default")
    mk.add_argument("--reuse", default="medium", choices=("low", "medium", "high"))
    mk.add_argument("--seed", type=int, default=1)
    mk.add_argument("--repositories", type=int, default=20)
    mk.add_argument("--days", type=int, default=365)
    mk.add_argument("--prehistory-days", type=int, default=0)
    args = parser.parse_args()
    print(f"python {platform.python_version()} on {platform.machine()}")
    {"scale": scale, "train": train_bench, "quality": quality,
     "breakdown": breakdown, "threshold": threshold, "steady": steady,
     "effect": effect, "released": released, "table": table,
     "make-fleet": make_fleet}[args.what](args)


if __name__ == "__main__":
    main()

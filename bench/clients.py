"""The distinct-real-clients features on loaded fleets: backfill, ablation, importance.

Usage (on COPIES of loaded fleets: ``backfill`` writes into DIR/store.db)::

    .venv/bin/python bench/clients.py backfill DIR...
    .venv/bin/python bench/clients.py effect DIR... [--sample 20000]

``backfill`` creates ``manifest_clients`` if the store predates it (the initial migration was
regenerated in place, so an existing store at revision 0001 lacks it) and fills it from the raw
events, printing rows, wall and CPU seconds. ``effect`` backtests 90 days before the fleet's
end (as ``bench/model.py quality`` does) twice, with and without the three client features,
printing precision, bytes recall, false positives and the threshold of each, then the
permutation importance (ROC AUC drop, 3 repeats) of every feature on a sample of the eligible
validation rows of the model with them.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender import config as config_mod  # noqa: E402
from recommender.store import open_store  # noqa: E402

CLIENT_FEATURES = ("clients", "new_clients_30", "new_clients_90")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def backfill(args: argparse.Namespace) -> None:
    from recommender.collector.clients import backfill_clients
    from recommender.store.tables import manifest_clients

    for directory in args.fleets:
        store = open_store(f"sqlite:///{Path(directory) / 'store.db'}", migrate_schema=False)
        manifest_clients.create(store.engine, checkfirst=True)
        wall, cpu = time.perf_counter(), _cpu()
        with store.begin() as conn:
            backfill_clients(conn)
        with store.connect() as conn:
            rows = conn.exec_driver_sql("SELECT count(*) FROM manifest_clients").scalar()
        print(f"{directory}: {rows} rows, {time.perf_counter() - wall:.1f} s wall, "
              f"{_cpu() - cpu:.1f} CPU-s", flush=True)
        store.dispose()


def effect(args: argparse.Namespace) -> None:
    import numpy as np
    from sklearn.inspection import permutation_importance

    from recommender import model as model_mod
    from recommender.features import FEATURES, days
    from recommender.training import label_snapshot, metrics, split_by_time

    cfg = config_mod.load(env={})
    for directory in args.fleets:
        root = Path(directory)
        meta = json.loads((root / "fleet.json").read_text())["spec"]
        end = datetime.fromisoformat(meta["start"]).replace(tzinfo=UTC) + timedelta(
            days=int(meta["days"]))
        at = end - timedelta(days=90)
        horizon = 90.0
        store = open_store(f"sqlite:///{root / 'store.db'}", migrate_schema=False)
        wall, cpu = time.perf_counter(), _cpu()
        h, times, data = model_mod._prepare(store, cfg, at, horizon, at + timedelta(days=90))
        test = label_snapshot(h, cfg, days(at), horizon)
        split = split_by_time(times)
        fitted_with = None
        for label, features in (("with clients", FEATURES),
                                ("without", tuple(f for f in FEATURES
                                                  if f not in CLIENT_FEATURES))):
            model_mod.FEATURES = features  # what make_pipeline, fit and score read
            fitted = model_mod.fit(data, split, cfg, extra=data.attrs.get("feedback"))
            m = metrics(test, fitted.suggest(test))
            print(f"{root} {label}: precision {m.precision:.4f}, recall {m.recall:.3f}, "
                  f"bytes recall {m.bytes_recall:.3f}, false pos. {m.false_positives} / "
                  f"{m.suggested}, threshold {fitted.threshold:.4f}; validation precision "
                  f"{fitted.validation.precision:.4f}, bytes recall "
                  f"{fitted.validation.bytes_recall:.3f}", flush=True)
            if fitted_with is None:
                fitted_with = fitted
        model_mod.FEATURES = FEATURES
        assert fitted_with is not None
        val = data[data["at"].isin(split.validate) & data["eligible"]]
        sample = val.sample(n=min(args.sample, len(val)), random_state=7)
        imp = permutation_importance(
            fitted_with.estimator, sample[list(FEATURES)], sample["dead"].to_numpy(),
            scoring="roc_auc", n_repeats=3, random_state=7)
        order = np.argsort(-imp.importances_mean)
        ranks = {FEATURES[i]: r + 1 for r, i in enumerate(order)}
        top = ", ".join(f"{FEATURES[i]} {imp.importances_mean[i]:.4f}" for i in order[:8])
        print(f"{root} importance (ROC AUC drop, {len(sample)} validation rows, "
              f"{int(sample['dead'].sum())} dead): top {top}", flush=True)
        for f in CLIENT_FEATURES:
            i = FEATURES.index(f)
            print(f"{root}   {f}: {imp.importances_mean[i]:.5f} "
                  f"(rank {ranks[f]} of {len(FEATURES)})", flush=True)
        print(f"{root}: {time.perf_counter() - wall:.0f} s wall, {_cpu() - cpu:.0f} CPU-s",
              flush=True)
        store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("backfill")
    b.add_argument("fleets", nargs="+")
    e = sub.add_parser("effect")
    e.add_argument("fleets", nargs="+")
    e.add_argument("--sample", type=int, default=20_000)
    args = parser.parse_args()
    {"backfill": backfill, "effect": effect}[args.command](args)


if __name__ == "__main__":
    main()

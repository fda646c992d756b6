"""The demo's ending: a summary on the terminal and ``report.html`` (batches with their
reasons, the model review plots as inline PNG)."""

from __future__ import annotations

import base64
import html
import io
import re
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from recommender.sizes import human_bytes, total_text

from .result import DemoResult
from .slackview import render_markdown

__all__ = ["guardrail_counts", "print_summary", "summary_rows", "write_report"]


def _mb(n: int | float | None) -> str:
    return human_bytes(n, unknown="–")


def _bytes_recall(model: dict[str, Any]) -> str:
    """'–' when no unused manifest had a known size (events only, no scan): unknown, not 0."""
    if model.get("dead_unsized") and not model.get("dead_sized"):
        return "–"
    return _pct(model.get("bytes_recall"))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _size(s: dict[str, Any]) -> int | None:
    known = s.get("reclaimable_bytes")
    return known if known is not None else s.get("bytes")


def _reason_label(reason: str) -> str:
    """A guardrail reason without its per-manifest figures, so that alike reasons count
    together: the window a rule keeps stays, how long ago it happened goes."""
    text = str(reason).split(":")[0].strip()
    deployed = re.match(r"deployed to production \d+ days? ago \(within (\d+ days?)\)", text)
    if deployed:
        return f"deployed to production within {deployed.group(1)}"
    return re.sub(r"\d+ days?", "N days", text)


def guardrail_counts(suggestions: list[dict[str, Any]]) -> Counter[str]:
    """Guardrail reasons, counted (``referenced: deploy/a.yaml:3`` counts as ``referenced``;
    day counts become N so that alike reasons count together). A manifest may have several."""
    counts: Counter[str] = Counter()
    for s in suggestions:
        for reason in s.get("blocked_by") or []:
            counts[_reason_label(reason)] += 1
    return counts


def summary_rows(r: DemoResult) -> list[tuple[str, str, str]]:
    """(what, before, after) rows: the same figures on the terminal and in the report."""
    b, a = r.storage_before, r.storage_after
    rows = []
    if b and a and r.registry_kind == "ecr":  # ECR's API shows images, never blobs
        rows += [("manifests in the registry", f"{b.manifests:,}", f"{a.manifests:,}"),
                 ("tags", f"{b.tags:,}", f"{a.tags:,}"),
                 ("bytes (imageSizeInBytes)", _mb(b.bytes), _mb(a.bytes))]
    elif b and a:
        rows += [("manifests in the registry", f"{b.manifests:,}", f"{a.manifests:,}"),
                 ("tags", f"{b.tags:,}", f"{a.tags:,}"),
                 ("blob files", f"{b.blobs:,}", f"{a.blobs:,}"),
                 ("bytes on disk", _mb(b.bytes), _mb(a.bytes))]
    return rows


def storage_title(r: DemoResult) -> str:
    return ("Registry storage, as ECR's describe_images lists it" if r.registry_kind == "ecr"
            else "Registry storage, measured on disk")


def _models(r: DemoResult) -> list[dict[str, Any]]:
    return list(r.backtest.get("results", []))


def print_summary(r: DemoResult, console: Console, report_path: Path) -> None:
    console.rule("[bold]tagwarden demo: summary")
    table = Table(title=storage_title(r), title_justify="left")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for row in summary_rows(r):
        table.add_row(*row)
    console.print(table)

    suggested = [s for s in r.suggestions if s.get("suggested")]
    kept = [s for s in r.suggestions if s.get("blocked_by")]
    console.print(f"[bold]Suggestions[/bold] at {r.now:%Y-%m-%d %H:%M} UTC: "
                  f"{len(suggested)} of {len(r.suggestions)} manifests suggested "
                  f"({total_text([_size(s) for s in suggested])} "
                  f"reclaimable), {len(kept)} kept by a guardrail (a manifest may have several):")
    for name, n in guardrail_counts(r.suggestions).most_common():
        console.print(f"    {n:>5}  {name}")
    posted = [b for b in r.batches if b.get("channel")]
    approved = next((b for b in r.batches if b["id"] == r.approved_batch), None)
    console.print(f"[bold]Slack[/bold] ({r.slack_mode}): {len(posted)} batches posted; one "
                  f"approved through a signed request"
                  + (f": {approved['repository']} ({approved['kind']}), "
                     f"{len(approved['items'])} manifests" if approved else ""))
    counts = r.execution.get("counts", {})
    when = f" after the cooling-off (--now {r.executed_at:%Y-%m-%d %H:%M})" \
        if r.executed_at else ""
    console.print(f"[bold]Executed[/bold]{when}: "
                  + (", ".join(f"{n} {k}" for k, n in counts.items()) or "nothing"))
    console.print(f"[bold]Live registry notifications[/bold] received during scan and "
                  f"execute: {r.live_events} ("
                  + ", ".join(f"{n} {usage}" for usage, n in r.live_by_usage.items()) + ")")
    console.print(f"[bold]Model[/bold] backtest at {r.backtest.get('at', '')[:10]}, horizon "
                  f"{r.backtest.get('horizon_days', 0):.0f} days ({r.backtest.get('mode')}):")
    for model in _models(r):
        console.print(f"    {model['name']:<10} precision {_pct(model.get('precision')):>7}  "
                      f"recall {_pct(model.get('recall')):>7}  "
                      f"bytes recall {_bytes_recall(model):>7}  "
                      f"suggested {model.get('suggested', 0):>5}  "
                      f"false positives {model.get('false_positives', 0)}")
    console.print(f"[bold]Report[/bold]: {report_path}")
    console.print(f"[bold]Total time[/bold]: {r.total_seconds:.1f} s")


# --- the HTML report ---------------------------------------------------------------------------


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return ("<img alt='plot' src='data:image/png;base64,"
            + base64.b64encode(buf.getvalue()).decode() + "'>")


def _plots(r: DemoResult) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to PNG only
    import matplotlib.pyplot as plt

    plots = []
    rows = _models(r)
    if rows:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        names = [row["name"] for row in rows]
        width = 0.27
        for i, key in enumerate(("precision", "recall", "bytes_recall")):
            ax.bar([x + (i - 1) * width for x in range(len(rows))],
                   [row.get(key) or 0 for row in rows], width, label=key.replace("_", " "))
        ax.set_xticks(range(len(rows)), names)
        ax.set_ylim(0, 1.05)
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title("Backtest: the model beside the tuned rules")
        plots.append(("Backtest", _png(fig)))
    scores = [(s.get("score") or 0.0, bool(s.get("suggested")), bool(s.get("blocked_by")))
              for s in r.suggestions]
    if scores:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        bins = [i / 20 for i in range(21)]
        ax.hist([sc for sc, sug, _ in scores if sug], bins=bins, label="suggested", alpha=0.8)
        ax.hist([sc for sc, sug, blk in scores if not sug and blk], bins=bins,
                label="kept by a guardrail", alpha=0.6)
        ax.hist([sc for sc, sug, blk in scores if not sug and not blk], bins=bins,
                label="kept by the model", alpha=0.6)
        ax.set_yscale("log")
        ax.set_xlabel("P(no use within the horizon)")
        ax.set_ylabel("manifests")
        ax.legend(fontsize=8)
        ax.set_title("Scores of every alive manifest")
        plots.append(("Scores", _png(fig)))
    guard = guardrail_counts(r.suggestions)
    if guard:
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.35 * len(guard)))
        common = guard.most_common()[::-1]
        ax.barh([name for name, _ in common], [n for _, n in common])
        ax.set_xlabel("manifests kept")
        ax.set_title("What the guardrails kept")
        plots.append(("Guardrails", _png(fig)))
    return plots


def _esc(x: object) -> str:
    return html.escape(str(x))


def write_report(r: DemoResult, path: Path) -> None:
    by_batch: dict[str, list[dict[str, Any]]] = {}
    for s in r.suggestions:
        if s.get("suggested"):
            by_batch.setdefault(s.get("batch", ""), []).append(s)
    parts = [f"""<!doctype html><html><head><meta charset="utf-8">
<title>tagwarden demo report</title><style>
body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}}
table{{border-collapse:collapse;margin:.5rem 0}} td,th{{border:1px solid #ccc;padding:.2rem .5rem;
text-align:left;font-size:.9rem}} code{{font-size:.85rem}} .dim{{color:#777}}
details{{margin:.3rem 0}} img{{max-width:100%}}</style></head><body>
<h1>tagwarden demo</h1>
<p class="dim">Run at {r.now:%Y-%m-%d %H:%M} UTC in {r.total_seconds:.0f} s; fleet seed
{r.size.seed}, {r.size.repositories} repositories, {r.size.days} days; Slack: {r.slack_mode}.</p>
<h2>{_esc(storage_title(r))}</h2>
<table><tr><th></th><th>before</th><th>after</th></tr>"""]
    parts += [f"<tr><td>{_esc(a)}</td><td>{_esc(b)}</td><td>{_esc(c)}</td></tr>"
              for a, b, c in summary_rows(r)]
    parts.append("</table><h2>Steps</h2><table><tr><th>step</th><th>s</th><th></th></tr>")
    parts += [f"<tr><td>{_esc(s)}</td><td>{t:.1f}</td><td>{_esc(d)}</td></tr>"
              for s, t, d in r.steps]
    parts.append("</table><h2>Model review</h2>")
    parts += [f"<h3>{_esc(title)}</h3>{img}" for title, img in _plots(r)]
    parts.append("<h2>Batches</h2>")
    states = {b["id"]: b for b in r.batches}
    for b in sorted(r.batches, key=lambda b: -b["reclaimable_bytes"]):
        mark = " — <b>approved in the demo</b>" if b["id"] == r.approved_batch else ""
        parts.append(f"<details{' open' if mark else ''}><summary><code>{_esc(b['repository'])}"
                     f"</code> ({_esc(b['kind'])}): {len(b['items'])} manifests, "
                     f"{_mb(b['reclaimable_bytes'])}, state {_esc(b['state'])}{mark}</summary>")
        if b["id"] in r.slack_messages:
            parts.append("<pre>" + _esc(render_markdown(r.slack_messages[b["id"]])) + "</pre>")
        parts.append("<table><tr><th>digest</th><th>tags</th><th>state</th><th>reasons</th></tr>")
        reasons = {s["digest"]: s.get("reasons") or []
                   for items in by_batch.values() for s in items}
        for item in b["items"]:
            parts.append(f"<tr><td><code>{_esc(item['digest'][:19])}</code></td>"
                         f"<td>{_esc(', '.join(item['tags']) or '(untagged)')}</td>"
                         f"<td>{_esc(item['state'])}</td>"
                         f"<td>{_esc('; '.join(reasons.get(item['digest'], [])))}</td></tr>")
        parts.append("</table></details>")
    if not states:
        parts.append("<p>No batch was recorded.</p>")
    parts.append("</body></html>\n")
    path.write_text("\n".join(parts), encoding="utf-8")

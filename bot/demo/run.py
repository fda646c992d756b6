"""The demo's steps, in order, each timed: fleet → registry → collector → scan → train →
Slack → approval → cooling-off → execute → garbage collection → summary and report.

Real parts throughout: Debian's docker-registry, ``tagwarden serve`` and the CLI commands a
platform team runs, as subprocesses. Only Slack is faked (a Web API on loopback), unless
``SLACK_BOT_TOKEN`` is set. The clock is injected: the fleet's history ends today, so "now" is
the real time for everything that Slack signs, and ``--now`` moves the executor past the
cooling-off.

With ``registry="ecr"`` the same story runs on moto's ECR server (:mod:`.ecr`): the images go
up with ``put_image``, the history arrives as CloudTrail records (ECR sends no notifications),
and the last step reads ``describe_images`` instead of collecting garbage: ECR frees the space
at once.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from recommender import decisions
from recommender.fleet import FleetSpec, generate
from recommender.registry.sync import RegistryClient
from recommender.store import open_store
from recommender.timeutil import utcnow

from .approval import PostedBatch, approve_payload, blocks_by_batch, send_signed
from .ecr import CREDENTIALS as ECR_CREDENTIALS
from .ecr import REGION as ECR_REGION
from .ecr import listed_images, measure_ecr, push_fleet_ecr, replay_trail
from .replay import push_fleet, replay_history
from .report import print_summary, write_report
from .result import FULL, QUICK, DemoResult, DemoSize
from .services import DemoError, Services, tagwarden_command
from .storage import measure

__all__ = ["FULL", "QUICK", "DemoResult", "DemoSize", "run_demo"]


APPROVER = "U0DEMOAPPROVER"
WORKSPACE = "T0DEMO"
HORIZON_DAYS = 30
REGISTRY_KINDS = ("distribution", "ecr")


class _Steps:
    def __init__(self, console: Console, result: DemoResult, total: int) -> None:
        self.console = console
        self.result = result
        self.total = total
        self.n = 0

    @contextmanager
    def step(self, title: str) -> Iterator[Callable[[str], None]]:
        self.n += 1
        notes: list[str] = []
        began = time.perf_counter()
        label = f"[bold]{self.n:>2}/{self.total}[/bold] {title}"
        with self.console.status(label + " …"):
            yield notes.append
        took = time.perf_counter() - began
        detail = "; ".join(notes)
        self.result.steps.append((title, took, detail))
        self.console.print(f"{label} [green]✓[/green] [dim]{took:5.1f} s[/dim]"
                           + (f"  {detail}" if detail else ""))


def _registry_block(registry_url: str, gc_config: Path) -> str:
    return f'''[registry]
url = "{registry_url}"
gc_config = "{gc_config}"'''


def _ecr_block(endpoint_url: str) -> str:
    return f'''[registry]
kind = "ecr"
region = "{ECR_REGION}"
endpoint_url = "{endpoint_url}"   # moto's ECR server on loopback'''


def _config_text(work: Path, registry_block: str, slack_api: str,
                 teams: dict[str, str], public_url: str, approver: str, team_id: str) -> str:
    team_blocks = "".join(f"""
[[team]]
name = "{name}"
repositories = ["{name}/*"]
channel = "{channel}"
approvers = ["{approver}"]
cool_off = "24h"
min_approvals = 1
""" for name, channel in sorted(teams.items()))
    return f"""# Written by `make demo` for one run; see deploy/config.example.toml for a real one.
[store]
url = "sqlite:///{work / 'tagwarden.db'}"

{registry_block}

[model]
dir = "{work / 'models'}"
horizon = "{HORIZON_DAYS}d"

[slack]
api_url = "{slack_api}"
public_url = "{public_url}"
team_id = "{team_id}"   # clicks from any other workspace are refused
post_interval = "0s"

[scheduler]
enabled = false   # the demo runs each job itself, with its injected clock
{team_blocks}
[[policy]]
repositories = ["*"]
protected_tags = ["latest", "stable", "prod-*"]
keep_production = 3
keep_other = 10
min_age = "7d"
keep_deployed_within = "30d"
"""


def _run(step: str, env: dict[str, str], *args: str, timeout: float = 600) -> str:
    done = subprocess.run(tagwarden_command(*args), capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)
    if done.returncode != 0:
        raise DemoError(f"`tagwarden {' '.join(args[2:])}` failed ({done.returncode}): "
                        f"{(done.stderr or done.stdout).strip()[-800:]}", step=step)
    return done.stdout


def _metric_by_usage(metrics_text: str, name: str) -> dict[str, float]:
    """``name{source="…",usage="…"} value`` lines of Prometheus' text format, summed by usage."""
    totals: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith(name + "{"):
            usage = re.search(r'usage="([^"]*)"', line)
            key = usage.group(1) if usage else ""
            totals[key] = totals.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


def run_demo(out_dir: Path, *, size: DemoSize = FULL, console: Console | None = None,
             env: dict[str, str] | None = None, registry: str = "distribution") -> DemoResult:
    """Run every step; write ``out_dir/report.html``; stop everything it started."""
    console = console or Console()
    environ = dict(os.environ if env is None else env)
    real_slack = bool(environ.get("SLACK_BOT_TOKEN"))
    began = time.perf_counter()
    now = utcnow()
    if registry not in REGISTRY_KINDS:
        raise DemoError(f"unknown registry {registry!r}: choose one of "
                        f"{', '.join(REGISTRY_KINDS)}", step="registry", registry=registry)
    result = DemoResult(size=size, now=now, slack_mode="real" if real_slack else "fake",
                        registry_kind=registry)
    steps = _Steps(console, result, total=11)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tagwarden-demo-"))
    result.workdir = str(work)
    try:
        with Services(work) as services:
            _run_steps(services, steps, result, work, environ, real_slack)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.total_seconds = time.perf_counter() - began
    write_report(result, out_dir / "report.html")
    (out_dir / "summary.json").write_text(json.dumps(_summary_json(result), indent=2) + "\n",
                                          encoding="utf-8")
    if result.approved_batch in result.slack_messages:
        _write_mockup(result, out_dir / "suggestion-batch.md")
    print_summary(result, console, out_dir / "report.html")
    return result


def _write_mockup(result: DemoResult, path: Path) -> None:
    """The approved batch's message exactly as the bot posted it (its Block Kit), rendered."""
    from .slackview import render_markdown

    blocks = result.slack_messages[result.approved_batch]
    path.write_text(
        "# What a suggestion batch looks like in Slack\n\n"
        "Generated by `make demo` (`bot/demo/slackview.py`) from the Block Kit the bot "
        "posted (`bot/blocks.py`), recorded by the fake Slack Web API; a text mock-up of the "
        f"message, not a screenshot. Run of {result.now:%Y-%m-%d}.\n\n"
        + render_markdown(blocks)
        + "\n<details><summary>The Block Kit JSON as sent (paste into Slack's Block Kit "
          "Builder to see it drawn)</summary>\n\n```json\n"
        + json.dumps({"blocks": blocks}, indent=2) + "\n```\n</details>\n",
        encoding="utf-8")


def _summary_json(result: DemoResult) -> dict[str, Any]:
    return {"now": result.now.isoformat(), "size": result.size.__dict__,
            "steps": [{"step": s, "seconds": round(t, 2), "detail": d}
                      for s, t, d in result.steps],
            "storage_before": result.storage_before.as_dict() if result.storage_before else None,
            "storage_after": result.storage_after.as_dict() if result.storage_after else None,
            "execution": result.execution.get("counts", {}),
            "total_seconds": round(result.total_seconds, 1)}


def _run_steps(services: Services, steps: _Steps, result: DemoResult, work: Path,
               environ: dict[str, str], real_slack: bool) -> None:
    size, now = result.size, result.now
    fleet_dir = work / "fleet"
    with steps.step("Generate a fleet's history (ending today)") as note:
        spec = FleetSpec(seed=size.seed, repositories=size.repositories, days=size.days,
                         start=(now - timedelta(days=size.days)).date(),
                         byte_scale=size.byte_scale)
        files = generate(spec, fleet_dir)
        s = files.summary
        note(f"{s['repositories']} repositories, {size.days} days, {s['events']} registry "
             f"events, {s['deploys']} deploys, {s['snapshots']} pod lists, "
             f"{s['manifests']} manifests")
    with (fleet_dir / "inventory.jsonl").open(encoding="utf-8") as fh:
        teams = sorted({json.loads(line)["repository"].split("/")[0] for line in fh})

    ecr = result.registry_kind == "ecr"
    start_title = ("Start moto's ECR server, the Slack API and tagwarden serve" if ecr
                   else "Start docker-registry, the Slack API and tagwarden serve")
    with steps.step(start_title) as note:
        if ecr:
            moto = services.start_ecr()
            registry_url, block = moto.url, _ecr_block(moto.url)
        else:
            registry = services.start_registry()
            registry_url = registry.url
            block = _registry_block(registry.url, registry.config_path)
        if real_slack:
            slack_api = environ.get("SLACK_API_URL", "https://slack.com/api/")
            channel = environ.get("TAGWARDEN_DEMO_CHANNEL", "")
            if not (channel and environ.get("SLACK_SIGNING_SECRET")
                    and environ.get("SLACK_TEAM_ID")):
                raise DemoError("with SLACK_BOT_TOKEN set, also set SLACK_SIGNING_SECRET, "
                                "SLACK_TEAM_ID, TAGWARDEN_DEMO_CHANNEL and "
                                "TAGWARDEN_DEMO_APPROVER (a user allowed to approve)",
                                step="slack")
            channels = {team: channel for team in teams}
        else:
            fake = services.start_fake_slack()
            slack_api = fake.api_url
            channels = {team: f"C0{team.upper().replace('-', '')[:9]}" for team in teams}
        token = secrets.token_urlsafe(24)
        approver = environ.get("TAGWARDEN_DEMO_APPROVER", APPROVER) if real_slack else APPROVER
        team_id = environ.get("SLACK_TEAM_ID", WORKSPACE) if real_slack else WORKSPACE
        signing = environ.get("SLACK_SIGNING_SECRET") if real_slack else secrets.token_hex(16)
        assert signing is not None
        config_path = work / "tagwarden.toml"
        config_path.write_text(_config_text(work, block, slack_api,
                                            channels, "http://127.0.0.1", approver, team_id),
                               encoding="utf-8")
        env = {**environ, "TAGWARDEN_COLLECTOR_TOKEN": token, "SLACK_SIGNING_SECRET": signing,
               "SLACK_BOT_TOKEN": environ.get("SLACK_BOT_TOKEN") or "xoxb-demo-fake",
               "TAGWARDEN_CONFIG": str(config_path), **(ECR_CREDENTIALS if ecr else {})}
        env.pop("TAGWARDEN_DB", None)
        server = services.start_server(config_path, env)
        result.endpoints = {"registry": registry_url, "tagwarden": server.url,
                            "slack": slack_api}
        note(f"registry {registry_url}, tagwarden {server.url}, Slack {slack_api}")

    if ecr:
        _ecr_usage_steps(services, steps, result, fleet_dir, server.url, token)
    else:
        _distribution_usage_steps(services, steps, result, fleet_dir, server.url, token)

    cli = ["--config", str(config_path)]
    with steps.step("Scan the registry (tagwarden scan)") as note:
        before_live = _collector_events(server.url)  # the replay's, to subtract
        out = _run("scan", env, *cli, "scan")
        note(out.strip().splitlines()[-1] if out.strip() else "scanned")

    _decide_steps(services, steps, result, work, env, cli, server.url, approver, team_id,
                  signing)

    if ecr:
        with steps.step("Storage: ECR reclaims it at once (no garbage-collection step)") \
                as note:
            assert services.ecr is not None
            after = listed_images(services.ecr.client())
            result.images_after = sorted(after)
            result.storage_after_execute = measure_ecr(after)
            result.storage_after = result.storage_after_execute
            before = result.storage_before.manifests if result.storage_before else 0
            note(f"{before - result.storage_after.manifests} images gone from "
                 "describe_images; ECR sends no notifications, so none arrived live")
        return

    with steps.step("Garbage-collect the registry (stopped)") as note:
        assert services.registry is not None
        registry = services.registry
        time.sleep(1.0)  # let the registry deliver its delete notifications
        after_live = _collector_events(server.url)
        result.live_by_usage = {k: int(v - before_live.get(k, 0.0))
                                for k, v in sorted(after_live.items())
                                if v - before_live.get(k, 0.0) > 0}
        result.live_events = sum(result.live_by_usage.values())
        result.storage_after_execute = measure(registry.storage)
        registry.stop()
        registry.garbage_collect()
        result.storage_after = measure(registry.storage)
        freed = result.storage_before.bytes - result.storage_after.bytes \
            if result.storage_before else 0
        note(f"{_mb(freed)} freed on disk; {result.live_events} live notifications received")


def _distribution_usage_steps(services: Services, steps: _Steps, result: DemoResult,
                              fleet_dir: Path, server_url: str, token: str) -> None:
    registry = services.registry
    assert registry is not None
    size = result.size

    with steps.step("Push the fleet's images (real, small)") as note:
        with RegistryClient(registry.url) as client:
            pushed = push_fleet(client, fleet_dir, byte_scale=size.byte_scale)
        result.pushed = pushed.__dict__
        result.storage_before = measure(registry.storage)
        note(f"{pushed.manifests} manifests, {pushed.tags} tags, "
             f"{result.storage_before.blobs} blobs, {_mb(result.storage_before.bytes)} on disk")

    with steps.step("Point the registry's notifications at tagwarden") as note:
        registry.notify_url = f"{server_url}/v1/events/distribution"
        registry.notify_token = token
        registry.restart()
        note("pushes were replayed from history instead (no double count)")

    with steps.step("Replay months of history through the collector (HTTP)") as note:
        replayed = replay_history(server_url, token, fleet_dir)
        result.replay = replayed.__dict__
        note(f"{replayed.accepted} registry events, {replayed.deploys} deploys, "
             f"{replayed.snapshots} pod lists in {replayed.requests} requests")


def _ecr_usage_steps(services: Services, steps: _Steps, result: DemoResult,
                     fleet_dir: Path, server_url: str, token: str) -> None:
    moto = services.ecr
    assert moto is not None
    client = moto.client()
    with steps.step("Push the fleet's images to ECR (put_image)") as note:
        pushed = push_fleet_ecr(client, fleet_dir, byte_scale=result.size.byte_scale)
        result.pushed = pushed.__dict__
        result.storage_before = measure_ecr(listed_images(client))
        note(f"{pushed.manifests} manifests, {pushed.tags} tags; "
             f"{result.storage_before.manifests} images in describe_images")

    with steps.step("ECR sends no notifications: CloudTrail records stand in") as note:
        note("the history's pulls, pushes and deletes become BatchGetImage, PutImage and "
             "BatchDeleteImage records")

    with steps.step("Replay months of history through the collector (CloudTrail, HTTP)") \
            as note:
        replayed = replay_trail(server_url, token, fleet_dir)
        result.replay = replayed.__dict__
        note(f"{replayed.accepted} trail events, {replayed.deploys} deploys, "
             f"{replayed.snapshots} pod lists in {replayed.requests} requests")


def _decide_steps(services: Services, steps: _Steps, result: DemoResult, work: Path,
                  env: dict[str, str], cli: list[str], server_url: str, approver: str,
                  team_id: str, signing: str) -> None:
    now = result.now
    with steps.step("Train and backtest the model") as note:
        result.train_output = _run("train", env, *cli, "train", "--now", now.isoformat())
        at = now - timedelta(days=HORIZON_DAYS)
        result.backtest = json.loads(_run("backtest", env, *cli, "backtest", "--at",
                                          at.isoformat(), "--format", "json"))
        model = _row(result.backtest, "model")
        note(result.train_output.strip().splitlines()[-1] + (
            f"; backtest precision {model['precision']:.1%}" if model else ""))

    with steps.step("Suggest and post the batches to Slack") as note:
        # One run: --all lists every alive manifest (the report shows what was kept and why);
        # only the suggested ones without a guardrail become batches and are posted.
        out = _run("suggest", env, *cli, "suggest", "--now", now.isoformat(), "--all",
                   "--format", "json", "--post")
        listed, end = json.JSONDecoder().raw_decode(out)
        result.suggestions = list(listed)
        note(out[end:].strip().splitlines()[0] if out[end:].strip() else "nothing posted")
        if services.slack is not None:
            result.slack_messages = blocks_by_batch(
                [r.args for r in services.slack.calls("chat.postMessage")])

    store = open_store(f"sqlite:///{work / 'tagwarden.db'}")
    try:
        with steps.step("Approve one batch (signed Slack request)") as note:
            batches = [b for b in decisions.list_batches(store,
                                                         states=[decisions.BatchState.PENDING])
                       if b.posted_ts]
            if not batches:
                raise DemoError("no batch was posted to Slack", step="approve")
            chosen = max(batches, key=lambda b: b.reclaimable_bytes)
            response_url = (services.slack.response_url("demo") if services.slack
                            else "https://hooks.slack.com/actions/unused")
            target = PostedBatch(chosen.id, chosen.posted_channel or "", chosen.posted_ts or "",
                                 f"{chosen.repository} ({chosen.kind})",
                                 result.slack_messages.get(chosen.id, []))
            send_signed(f"{server_url}/slack/events",
                        approve_payload(target, user=approver, team=team_id,
                                        response_url=response_url), signing)
            approved = _wait_for_state(store, chosen.id, decisions.BatchState.APPROVED)
            result.approved_batch = chosen.id
            result.approved_at = approved.decided_at
            note(f"{chosen.repository} ({chosen.kind}): {len(chosen.items)} manifests, "
                 f"due {approved.due_at:%Y-%m-%d %H:%M} UTC" if approved.due_at else "")
            due = approved.due_at or utcnow()

        with steps.step("Let the cooling-off pass; execute (tagwarden execute --now)") as note:
            result.executed_at = due + timedelta(minutes=1)
            report = json.loads(_run("execute", env, *cli, "execute", "--now",
                                     result.executed_at.isoformat(), "--json"))
            result.execution = report
            note(", ".join(f"{n} {k}" for k, n in result.execution["counts"].items())
                 or "nothing due")
            result.batches = [_batch_dict(b) for b in decisions.list_batches(store)]
    finally:
        store.engine.dispose()


def _collector_events(base_url: str) -> dict[str, float]:
    import httpx

    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    return _metric_by_usage(text, "tagwarden_events_received_total")


def _wait_for_state(store: Any, batch_id: str, state: decisions.BatchState,
                    timeout: float = 30) -> decisions.BatchRecord:
    deadline = time.monotonic() + timeout
    while True:
        batch = decisions.get_batch(store, batch_id)
        if batch.state == state:
            return batch
        if time.monotonic() > deadline:
            raise DemoError(f"batch {batch_id} is {batch.state}, not {state}", step="approve")
        time.sleep(0.1)


def _batch_dict(b: decisions.BatchRecord) -> dict[str, Any]:
    return {"id": b.id, "team": b.team, "repository": b.repository, "kind": b.kind,
            "state": b.state, "reclaimable_bytes": b.reclaimable_bytes,
            "decided_by": b.decided_by, "channel": b.posted_channel,
            "items": [{"digest": i.digest, "state": i.state, "tags": list(getattr(i, "tags", ())),
                       "reclaimable_bytes": i.reclaimable_bytes} for i in b.items]}


def _row(backtest: dict[str, Any], name: str) -> dict[str, Any] | None:
    for row in backtest.get("results", []):
        if row.get("name") == name:
            return dict(row)
    return None


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"

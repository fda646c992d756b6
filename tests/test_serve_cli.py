"""``tagwarden serve`` as an operator runs it: a real subprocess, real HTTP, SIGTERM to stop."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from bot.fakeslack import FakeSlack
from recommender.registry.local import free_port

TOKEN = "cli-token"


def start(tmp_path: Path, *args: str, env_token: bool = True, config: str = "",
          env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {"PATH": "/usr/bin:/bin", **(env or {})}
    if env_token:
        env["TAGWARDEN_COLLECTOR_TOKEN"] = TOKEN
    # A long group-commit wait keeps a request in flight while the server is told to stop.
    (tmp_path / "c.toml").write_text('[collector]\nbatch_max_delay = "1.5s"\n' + config)
    return subprocess.Popen(
        [sys.executable, "-m", "recommender.cli", "--config", "c.toml",
         "--db", f"sqlite:///{tmp_path / 's.db'}", "serve", *args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("tagwarden serve did not become healthy")


@pytest.mark.parametrize("writer", ["thread", "process"])
def test_serve_ingests_and_stops_gracefully_on_sigterm(tmp_path: Path, writer: str) -> None:
    port = free_port()
    proc = start(tmp_path, "--host", "127.0.0.1", "--port", str(port), "--writer", writer)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        deploy = {"timestamp": "2026-01-01T00:00:00Z", "image": "r.example/shop/web:v1",
                  "environment": "production"}
        assert "tagwarden_events_received_total" in httpx.get(f"{url}/metrics").text
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(httpx.post, f"{url}/v1/events/deploy",
                                  content=json.dumps(deploy), timeout=30,
                                  headers={"Authorization": f"Bearer {TOKEN}"})
            time.sleep(0.5)  # the request now waits in the batcher
            proc.send_signal(signal.SIGTERM)
            r = pending.result()
        # the in-flight request is finished and answered before the server exits
        assert r.status_code == 200 and r.json() == {"accepted": 1}
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # uvicorn re-raises the signal after its graceful shutdown, as a service manager expects
    assert proc.returncode in (0, -signal.SIGTERM), err
    assert "Traceback" not in err
    assert f"serving on http://127.0.0.1:{port}" in err
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert conn.execute("SELECT environment FROM events").fetchall() == [("production",)]


def test_serve_on_a_busy_port_fails_without_traceback(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = start(tmp_path, "--port", str(busy.getsockname()[1]), env_token=False)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in err
    assert "collector.token is not set" in err  # the operator is told why POSTs will fail
    assert "serving on" not in err  # announced only once bound
    [error] = [line for line in err.splitlines()
               if "collector.token" not in line and "Slack is off" not in line]
    assert "address already in use" in error.lower()


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_serve_starts_and_collects_while_slack_cannot_be_reached(tmp_path: Path) -> None:
    port, nobody = free_port(), free_port()  # nothing listens on the second: refused
    proc = start(tmp_path, "--port", str(port), "--writer", "thread",
                 config=f'[slack]\napi_url = "http://127.0.0.1:{nobody}/api/"\n',
                 env={"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s3cret"})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        deploy = {"timestamp": "2026-01-01T00:00:00Z", "image": "r.example/shop/web:v1"}
        r = httpx.post(f"{url}/v1/events/deploy", content=json.dumps(deploy), timeout=30,
                       headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json() == {"accepted": 1}
        deadline = time.monotonic() + 30
        while (health := httpx.get(f"{url}/healthz").json())["slack"] != "unreachable, retrying":
            assert time.monotonic() < deadline, health
            time.sleep(0.1)
        assert 'tagwarden_notifier_ready{notifier="slack"} 0.0' in httpx.get(f"{url}/metrics").text
        events = httpx.post(f"{url}/slack/events", content="{}")
        assert events.status_code == 503
        assert events.json()["error"] == "Slack is not ready: unreachable, retrying"
    finally:
        err = _stop(proc)
    assert "Traceback" not in err, err
    assert "Slack cannot be reached" in err and "the collector serves meanwhile" in err
    assert f"serving on http://127.0.0.1:{port}" in err


def test_serve_says_when_slack_is_ready(tmp_path: Path) -> None:
    port = free_port()
    with FakeSlack() as fake:
        proc = start(tmp_path, "--port", str(port), "--writer", "thread",
                     config=f'[slack]\napi_url = "{fake.api_url}"\n',
                     env={"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s3cret"})
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, proc)
            deadline = time.monotonic() + 30
            while httpx.get(f"{url}/healthz").json()["slack"] != "ready":
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert 'tagwarden_notifier_ready{notifier="slack"} 1.0' in \
                httpx.get(f"{url}/metrics").text
        finally:
            err = _stop(proc)
    assert "Traceback" not in err, err
    # tagwarden's own info lines are shown (the ready line is logged before the status flips)
    assert "INFO bot.serving: Slack is ready (HTTP at /slack/events)" in err


def test_serve_without_a_bot_token_says_slack_is_off(tmp_path: Path) -> None:
    port = free_port()
    proc = start(tmp_path, "--port", str(port), "--writer", "thread")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        events = httpx.post(f"{url}/slack/events", content="{}")
        assert events.status_code == 503
        assert "Slack is not configured" in events.json()["error"]
    finally:
        err = _stop(proc)
    assert "Slack is off: slack.bot_token (SLACK_BOT_TOKEN) is not set" in err


def test_serve_with_two_workers_shares_the_store_and_the_metrics(tmp_path: Path) -> None:
    port = free_port()
    proc = start(tmp_path, "--host", "127.0.0.1", "--port", str(port), "--workers", "2")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        for n in range(8):  # a new connection each time: the kernel spreads them over workers
            deploy = {"timestamp": f"2026-01-0{n + 1}T00:00:00Z",
                      "image": f"r.example/shop/web:v{n}"}
            r = httpx.post(f"{url}/v1/events/deploy", content=json.dumps(deploy),
                           headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
            assert r.status_code == 200, r.text
        for _ in range(4):  # whichever worker answers, the totals are the same
            text = httpx.get(f"{url}/metrics").text
            assert 'tagwarden_events_received_total{source="deploy",usage="use"} 8.0' in text
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in err, err
    assert "2 workers" in err
    with sqlite3.connect(tmp_path / "s.db") as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (8,)
